"""Read ``docker-compose.yml``: the one place that states each service's limits and command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from stack.cgroups import Limits, parse_cpus, parse_memory


class ComposeError(ValueError):
    """docker-compose.yml lacks something the stack relies on; the message names it."""


def load(path: Path) -> dict[str, Any]:
    """The compose file as data."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ComposeError(f"{path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        raise ComposeError(f"{path}: expected a mapping with a 'services' mapping")
    return data


def service_limits(compose: dict[str, Any]) -> dict[str, Limits]:
    """Every service's ``deploy.resources.limits``; a service without them is an error."""
    limits = {}
    for name, service in compose["services"].items():
        raw = ((service or {}).get("deploy") or {}).get("resources", {}).get("limits")
        if not raw or "cpus" not in raw or "memory" not in raw:
            raise ComposeError(
                f"services.{name}.deploy.resources.limits: expected 'cpus' and 'memory'"
            )
        try:
            limits[name] = Limits(parse_cpus(raw["cpus"]), parse_memory(raw["memory"]))
        except ValueError as exc:
            raise ComposeError(f"services.{name}.deploy.resources.limits.{exc}") from None
    return limits


def command(compose: dict[str, Any], service: str) -> list[str]:
    """A service's ``command`` as an argv list (compose also allows one string)."""
    value = compose["services"][service].get("command")
    if isinstance(value, str):
        return value.split()
    if not isinstance(value, list):
        raise ComposeError(f"services.{service}.command: expected a list, found {value!r}")
    return [str(part) for part in value]
