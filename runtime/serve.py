"""``python -m runtime serve``: one instance's processes, started and supervised.

The bundle was loaded and checked by the command line; here the instance's name is reserved,
the migrations applied, and the supervisor forks the children. On SIGHUP the supervisor calls
the reloader made here, which reads the bundle's files again (``runtime.supervisor``).
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from runtime.bundle import Bundle, check_bundle, load_bundle
from runtime.config import RuntimeConfig
from runtime.errors import ConfigError, ManifestError, RuntimeStartError
from runtime.logs import setup_logging
from runtime.metrics import enable_multiprocess
from runtime.migrations import migrate_database
from runtime.supervisor import (
    Child,
    Reloader,
    Supervisor,
    children_for,
    hold_instance_name,
    unit_name,
)

_FIXED_ON_RELOAD = ("instance", "metrics_dir")


def serve(config_path: str | None, instance: str | None, role: str, bundle: Bundle) -> int:
    """Reserve the name, migrate, then supervise the children until asked to stop."""
    # A reload asked for while this process starts would find the files it is reading: none
    # is lost by ignoring it until the supervisor listens.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = bundle.runtime
    unit = unit_name(config.instance, role)
    setup_logging(config.logging.level, f"{unit}/serve")
    log = logging.getLogger("runtime")
    children = children_for(bundle, role)
    if not children:
        raise RuntimeStartError(
            f"--role {role} runs nothing: {bundle.manifest.path} declares no function of that role"
        )
    hold_instance_name(bundle, role)
    log.info("migrations up to date", extra={"applied_now": _migrate(config)})
    enable_multiprocess(Path(config.metrics_dir), unit)
    log.info(
        "serving",
        extra={"role": role, "bind": config.bind, "children": [c.name for c in children]},
    )
    reload = reloader(bundle, config_path, instance, role)
    return Supervisor(config, children, unit=unit, reload=reload).run()


def reloader(loaded: Bundle, config_path: str | None, instance: str | None, role: str) -> Reloader:
    """What the supervisor calls on SIGHUP: the bundle's modules are forgotten and its files
    read again, checked as ``runtime check`` checks them, migrated; on any fault the modules
    are put back as they were and the fault is raised."""
    current = {"bundle": loaded}

    def reload() -> tuple[RuntimeConfig, list[Child]]:
        old = current["bundle"]
        saved = dict(sys.modules)
        for name in bundle_modules(old.manifest.root.resolve()):
            del sys.modules[name]
        try:
            new = load_bundle(config_path, instance=instance)
            check_bundle(new)
            for key in _FIXED_ON_RELOAD:
                if getattr(new.runtime, key) != getattr(old.runtime, key):
                    raise ConfigError(f"{key}: cannot change on a reload; restart the instance")
            children = children_for(new, role)
            if not children:
                raise ManifestError(f"--role {role} would run nothing after the reload")
            hold_instance_name(new, role)
            _migrate(new.runtime)
        except BaseException:
            sys.modules.clear()
            sys.modules.update(saved)
            raise
        current["bundle"] = new
        return new.runtime, children

    return reload


def bundle_modules(root: Path) -> list[str]:
    """The modules loaded from the bundle's folder: not the runtime's own, and not the
    installed libraries (a virtualenv often sits inside the project's folder)."""
    kept = [Path(__file__).resolve().parent]
    kept += [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}]
    names = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        path = Path(file).resolve()
        if "site-packages" in path.parts or "dist-packages" in path.parts:
            continue
        if path.is_relative_to(root) and not any(path.is_relative_to(k) for k in kept):
            names.append(name)
    return names


def _migrate(config: RuntimeConfig) -> list[int]:
    return migrate_database(config.postgres, Path(config.migrations))
