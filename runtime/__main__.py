"""The runtime's command line: ``python -m runtime serve|check|migrate``.

``serve`` runs one instance: it validates config and bundle, applies migrations, then forks the
HTTP server and the workers and supervises them. ``--role http`` runs only the HTTP server and
``--role workers`` only the background and scheduled functions, so a deployment can give each
its own CPU limit (the HTTP server's latency then never pays for the forwarder's bursts). Any
start-up error exits with status 2 and one line that says what to fix.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from runtime.errors import RuntimeStartError
from runtime.supervisor import ROLES, unit_name

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
    try:
        return _run(args)
    except RuntimeStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from runtime.config import load_config
    from runtime.logs import setup_logging
    from runtime.metrics import enable_multiprocess

    config = load_config(args.config, instance=args.instance)
    unit = unit_name(config.instance, args.role)
    setup_logging(config.logging.level, f"{unit}/{args.command}")
    enable_multiprocess(Path(config.metrics_dir), unit)

    from runtime.manifest import load_manifest

    manifest = load_manifest(config.manifest)
    log = logging.getLogger("runtime")
    if args.command == "check":
        print(f"ok: {len(manifest.functions)} functions in {manifest.path}, config valid")
        return 0

    from runtime.db import Database
    from runtime.migrations import migrate_when_ready

    database = Database(config.postgres)
    try:
        applied = migrate_when_ready(database, Path(config.migrations), _MIGRATE_TIMEOUT_S)
    finally:
        database.close()
    log.info("migrations up to date", extra={"applied_now": applied})
    if args.command == "migrate":
        return 0

    from runtime.supervisor import Supervisor, children_for

    children = children_for(config, manifest, args.role)
    if not children:
        raise RuntimeStartError(
            f"--role {args.role} runs nothing: {manifest.path} declares no function of that role"
        )
    log.info(
        "serving",
        extra={"role": args.role, "bind": config.bind, "children": [c.name for c in children]},
    )
    return Supervisor(config, children, unit=unit).run()


if __name__ == "__main__":
    sys.exit(main())
