"""The runtime's command line: ``python -m runtime serve|check|migrate``.

``check`` loads the bundle and its config and builds every function once, with connections
that refuse to be used: whatever ``serve`` would fail on before its first request, it reports,
and it writes nothing. ``serve`` runs the same checks, applies the migrations, then forks the
HTTP server and the workers and supervises them. ``--role http`` runs only the HTTP server and
``--role workers`` only the background and scheduled functions, so a deployment can give each
its own CPU limit. Any start-up error exits with status 2 and one line that says what to fix.
"""

from __future__ import annotations

import argparse
import sys

from runtime.manifest import ROLES

_MIGRATE_TIMEOUT_S = 60.0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("serve", "check", "migrate"))
    parser.add_argument(
        "--config", help="YAML config file (default: $APP_CONFIG or config/app.yaml)"
    )
    parser.add_argument("--instance", help="instance name, overriding the config (app1, app2...)")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="serve: which of the instance's processes to run (default: all)",
    )
    args = parser.parse_args(argv)
    if args.command == "check":
        sys.dont_write_bytecode = True  # a check leaves no file in the bundle, not even bytecode
    from runtime.errors import RuntimeStartError

    try:
        return _run(args)
    except RuntimeStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "migrate":
        return _migrate(args)
    from runtime.bundle import check_bundle, load_bundle

    bundle = load_bundle(args.config, instance=args.instance)
    check_bundle(bundle)
    if args.command == "check":
        print(f"ok: {_describe(bundle)}")
        return 0
    return _serve(args, bundle)


def _describe(bundle: object) -> str:
    from runtime.bundle import Bundle

    assert isinstance(bundle, Bundle)
    manifest = bundle.manifest
    kinds = [kind for kind in ("http", "background", "schedule") if manifest.of_kind(kind)]
    counts = ", ".join(f"{len(manifest.of_kind(kind))} {kind}" for kind in kinds)
    queues = len(manifest.queues)
    return (
        f"{len(manifest.functions)} functions ({counts}) and {queues} "
        f"queue{'s' if queues != 1 else ''} in {manifest.path}; config valid"
    )


def _migrate(args: argparse.Namespace) -> int:
    import logging
    from pathlib import Path

    from runtime.config import load_runtime_config
    from runtime.db import Database
    from runtime.logs import setup_logging
    from runtime.migrations import migrate_when_ready

    config = load_runtime_config(args.config, instance=args.instance)
    setup_logging(config.logging.level, f"{config.instance}/migrate")
    database = Database(config.postgres)
    try:
        applied = migrate_when_ready(database, Path(config.migrations), _MIGRATE_TIMEOUT_S)
    finally:
        database.close()
    logging.getLogger("runtime").info("migrations up to date", extra={"applied_now": applied})
    return 0


def _serve(args: argparse.Namespace, bundle: object) -> int:
    import logging
    from pathlib import Path

    from runtime.bundle import Bundle
    from runtime.db import Database
    from runtime.errors import RuntimeStartError
    from runtime.logs import setup_logging
    from runtime.metrics import enable_multiprocess
    from runtime.migrations import migrate_when_ready
    from runtime.supervisor import Supervisor, children_for, hold_instance_name, unit_name

    assert isinstance(bundle, Bundle)
    config = bundle.runtime
    unit = unit_name(config.instance, args.role)
    setup_logging(config.logging.level, f"{unit}/serve")
    log = logging.getLogger("runtime")
    children = children_for(bundle, args.role)
    if not children:
        raise RuntimeStartError(
            f"--role {args.role} runs nothing: {bundle.manifest.path} declares no function of "
            "that role"
        )
    hold_instance_name(bundle, args.role)
    database = Database(config.postgres)
    try:
        applied = migrate_when_ready(database, Path(config.migrations), _MIGRATE_TIMEOUT_S)
    finally:
        database.close()
    log.info("migrations up to date", extra={"applied_now": applied})
    enable_multiprocess(Path(config.metrics_dir), unit)
    log.info(
        "serving",
        extra={"role": args.role, "bind": config.bind, "children": [c.name for c in children]},
    )
    return Supervisor(config, children, unit=unit).run()


if __name__ == "__main__":
    sys.exit(main())
