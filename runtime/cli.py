"""The runtime's command line: ``python -m runtime COMMAND``; ``COMMAND --help`` for each.

Every command reads the same config (``--config``, ``$APP_CONFIG`` or ``config/app.yaml``,
then ``APP__*``) and the manifest it names. Any start-up error exits with status 2 and one
line that says what to fix.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.manifest import KINDS, ROLES

_INVOKE_TIMEOUT_S = 10.0

_COMMANDS = {
    "serve": (
        "run one instance: migrations, then its HTTP server and workers, supervised",
        """Checks the bundle, applies the SQL migrations, then forks the HTTP server and the
background and scheduled functions and restarts any that dies. --role http or --role workers
runs only that part, so that a deployment gives each its own CPU limit.

SIGHUP reloads the bundle in place: its files are read again and checked first (a broken
bundle is refused with the fault in the log, and the running processes keep serving), then
the children are replaced by ones running the new functions, settings and config. The
runtime's own code is not reloaded (restart for that).

example:
  python -m runtime serve --instance app1 --role http
  kill -HUP <pid>            # or: docker compose kill -s HUP app1 worker1""",
    ),
    "check": (
        "everything serve would fail on, found before anything runs (writes nothing)",
        """Loads every handler, validates the config and every function's settings, checks
the queues' wiring and builds each function once with connections that refuse to be used.

example:
  python -m runtime check && echo deployable""",
    ),
    "migrate": (
        "apply the SQL migrations in migrations/ (serve does it too)",
        "example:\n  APP__POSTGRES__HOST=db python -m runtime migrate",
    ),
    "new": (
        "write a function, its functions.yaml entry and a test that passes",
        """Writes functions/NAME.py from the project's template, adds its entry to
functions.yaml (comments and layout kept) and writes tests/functions/test_NAME.py. A background
function on a new queue comes with the HTTP function that puts to it (--route).

examples:
  python -m runtime new version --kind http --route /version --methods GET
  python -m runtime new mailer --kind background --queue mails --route /mails
  python -m runtime new cleanup --kind schedule --every-s 60""",
    ),
    "invoke": (
        "call one function in-process, without Nginx or bjoern",
        """HTTP functions answer through the bundle's real Falcon app; background functions get
one record through prepare and handle; scheduled ones run once. The connections are the
config's (a running stack's PostgreSQL and Memcached); --offline gives ones that refuse.
Exit status: 0 for a 2xx or a clean run, 1 otherwise, 2 for a wrong command.

examples:
  python -m runtime invoke summary --path /payments-summary --query from=2025-07-01T00:00:00Z
  python -m runtime invoke intake --body '{"correlationId": "...", "amount": 19.9}'
  python -m runtime invoke forwarder --message @payment.json
  python -m runtime invoke health_poller""",
    ),
    "routes": (
        "the bundle as a table: routes, queues, schedules, handlers, settings and their origin",
        "example:\n  APP__FUNCTIONS__HEALTH__CACHE_S=2 python -m runtime routes",
    ),
    "dev": (
        "one instance on a TCP port, restarted when a file of the bundle changes",
        """Runs every role of one instance with its HTTP server on --port (no Nginx), and
restarts it when a file it loads changes (the manifest's folder: functions/, the domain
package, config/, functions.yaml, migrations/). A change that breaks the bundle is printed and
the last good bundle keeps serving. PostgreSQL and Memcached come from the config (the local
stack's when it runs).

example:
  python -m runtime dev --port 8080""",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, with its help and examples."""
    parser = argparse.ArgumentParser(
        prog="python -m runtime",
        description="A function runtime: serve a bundle (functions.yaml) on bjoern, check it, "
        "write, invoke and list its functions, develop it with reloads.",
        epilog="python -m runtime COMMAND --help shows each command's options and examples.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", help="YAML config file (default: $APP_CONFIG or config/app.yaml)"
    )
    common.add_argument("--instance", help="instance name, overriding the config (app1, app2...)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = {
        name: commands.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}.\n\n{details}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[common],
        )
        for name, (summary, details) in _COMMANDS.items()
    }
    sub["serve"].add_argument(
        "--role", choices=ROLES, default="all", help="which of the instance's processes to run"
    )
    new = sub["new"]
    new.add_argument("name", help="the function's name, lower_snake_case")
    new.add_argument("--kind", choices=KINDS, required=True)
    new.add_argument("--route", help="http: the route template, e.g. /items/{id}")
    new.add_argument("--methods", help="http: comma-separated, e.g. GET,POST (default GET)")
    new.add_argument("--queue", help="background: the queue it consumes; http: one it puts to")
    new.add_argument("--every-s", type=float, help="schedule: seconds between runs")
    new.add_argument("--manifest", type=Path, help="default: the config's manifest")
    invoke = sub["invoke"]
    invoke.add_argument("name", help="the function to call")
    invoke.add_argument("--method", help="http: default the function's first method")
    invoke.add_argument("--path", help="http: default the function's route")
    invoke.add_argument("--query", default="", help="http: a query string, e.g. from=...&to=...")
    invoke.add_argument(
        "--header", action="append", default=[], metavar="NAME:VALUE", help="http: repeatable"
    )
    invoke.add_argument("--body", help="http: @file, - (standard input) or the JSON itself")
    invoke.add_argument("--message", help="background: the record, as @file, - or JSON")
    invoke.add_argument(
        "--timeout-s",
        type=float,
        default=_INVOKE_TIMEOUT_S,
        help="background: how long to wait for the acknowledgement",
    )
    invoke.add_argument("--offline", action="store_true", help="connections that refuse")
    dev = sub["dev"]
    dev.add_argument("--port", type=int, default=8080, help="the HTTP port on 127.0.0.1")
    dev.add_argument("--host", default="127.0.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.command in ("check", "routes"):
        sys.dont_write_bytecode = True  # they leave no file in the bundle, not even bytecode
    from runtime.errors import RuntimeStartError

    try:
        return _run(args)
    except RuntimeStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate":
        return _migrate(args)
    if args.command == "new":
        return _new(args)
    if args.command == "dev":
        from runtime import dev

        return dev.run(config=args.config, instance=args.instance, host=args.host, port=args.port)
    from runtime.bundle import check_bundle, load_bundle

    instance = args.instance or ("invoke" if args.command == "invoke" else None)
    bundle = load_bundle(args.config, instance=instance)
    if args.command == "routes":
        from runtime.routes import table

        print(table(bundle))
        return 0
    check_bundle(bundle)
    if args.command == "check":
        print(f"ok: {_describe(bundle)}")
        return 0
    if args.command == "invoke":
        return _invoke(args, bundle)
    from runtime.serve import serve

    return serve(args.config, args.instance, args.role, bundle)


def _describe(bundle: object) -> str:
    from runtime.bundle import Bundle

    assert isinstance(bundle, Bundle)
    manifest = bundle.manifest
    kinds = [kind for kind in KINDS if manifest.of_kind(kind)]
    counts = ", ".join(f"{len(manifest.of_kind(kind))} {kind}" for kind in kinds)
    queues = len(manifest.queues)
    return (
        f"{len(manifest.functions)} functions ({counts}) and {queues} "
        f"queue{'s' if queues != 1 else ''} in {manifest.path}; config valid"
    )


def _new(args: argparse.Namespace) -> int:
    from runtime.config import read_config, runtime_config
    from runtime.scaffold import NewFunction, new_function

    manifest = args.manifest or Path(runtime_config(read_config(args.config)).manifest)
    methods = tuple(m.strip().upper() for m in args.methods.split(",")) if args.methods else ()
    request = NewFunction(
        name=args.name,
        kind=args.kind,
        route=args.route,
        methods=methods,
        queue=args.queue,
        every_s=args.every_s,
    )
    written = new_function(manifest, request)
    for path in written.created:
        print(f"created {path}")
    for path in written.changed:
        print(f"changed {path}")
    test = next((p for p in written.created if p.name.startswith("test_")), None)
    print(f"next: python -m runtime check && python -m pytest -q {test}")
    return 0


def _invoke(args: argparse.Namespace, bundle: object) -> int:
    from runtime import invoke
    from runtime.bundle import Bundle
    from runtime.logs import setup_logging

    assert isinstance(bundle, Bundle)
    setup_logging(bundle.runtime.logging.level, f"invoke/{args.name}")
    call = invoke.HttpCall(
        method=args.method,
        path=args.path,
        query=args.query,
        headers=tuple(args.header),
        body=args.body,
    )
    return invoke.run(
        bundle,
        args.name,
        call=call,
        message=args.message,
        offline=args.offline,
        timeout_s=args.timeout_s,
    )


def _migrate(args: argparse.Namespace) -> int:
    import logging

    from runtime.config import load_runtime_config
    from runtime.logs import setup_logging
    from runtime.migrations import migrate_database

    config = load_runtime_config(args.config, instance=args.instance)
    setup_logging(config.logging.level, f"{config.instance}/migrate")
    applied = migrate_database(config.postgres, Path(config.migrations))
    logging.getLogger("runtime").info("migrations up to date", extra={"applied_now": applied})
    return 0
