"""Load and validate ``functions.yaml``, the bundle manifest, and resolve each handler.

An entry names one function::

    - name: intake
      handler: functions/intake.py:Intake   # file relative to the manifest, then a class
      kind: http                            # http | background | schedule
      route: /payments                      # http: a Falcon route template
      methods: [POST]                       # http: the methods it answers
      queue: payments                       # background: the queue it consumes;
                                            # http: the queue it may put on (optional)
      concurrency: 256                      # background: items in flight per process
      processes: 1                          # background: processes per instance
      every_s: 1.0                          # schedule: seconds between runs
      settings: {}                          # anything the function wants, handed to it

Every mistake stops the runtime with the manifest's path, the entry and what is wrong.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from runtime.errors import (
    HandlerNotFound,
    HandlerShapeError,
    ImportModuleError,
    ManifestError,
    UserCodeSyntaxError,
)

KINDS = ("http", "background", "schedule")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_COMMON_KEYS = {"name", "handler", "kind", "settings"}
_KIND_KEYS = {
    "http": {"route", "methods", "queue"},
    "background": {"queue", "concurrency", "processes"},
    "schedule": {"every_s"},
}
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_MAX_CONCURRENCY = 4096
_MAX_PROCESSES = 16


@dataclass(frozen=True)
class FunctionSpec:
    """One validated manifest entry with its handler class resolved."""

    name: str
    kind: str
    handler_ref: str
    handler: type
    settings: dict[str, Any] = field(default_factory=dict)
    route: str | None = None
    methods: tuple[str, ...] = ()
    queue: str | None = None
    concurrency: int = 1
    processes: int = 1
    every_s: float = 0.0


@dataclass(frozen=True)
class Manifest:
    """The bundle: every function, in manifest order."""

    path: Path
    functions: tuple[FunctionSpec, ...]

    def of_kind(self, kind: str) -> list[FunctionSpec]:
        """The functions of one kind, in manifest order."""
        return [spec for spec in self.functions if spec.kind == kind]

    @property
    def queues(self) -> set[str]:
        """Every queue a function names."""
        return {spec.queue for spec in self.functions if spec.queue}


def load_manifest(path: str | Path) -> Manifest:
    """Read, validate and resolve the manifest at ``path``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or set(data) != {"functions"}:
        raise ManifestError(f"{path}: expected a mapping with one key, 'functions'")
    entries = data["functions"]
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: 'functions' must be a non-empty list of entries")
    specs = [_parse_entry(path, index, entry) for index, entry in enumerate(entries)]
    _check_unique(path, specs)
    return Manifest(path=path, functions=tuple(specs))


def _parse_entry(path: Path, index: int, entry: Any) -> FunctionSpec:
    where = f"{path}: functions[{index}]"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: expected a mapping, found {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ManifestError(f"{where}: 'name' must be lower_snake_case text, found {name!r}")
    where = f"{path}: function '{name}'"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ManifestError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, found {kind!r}")
    unknown = sorted(set(entry) - _COMMON_KEYS - _KIND_KEYS[kind])
    if unknown:
        allowed = ", ".join(sorted(_COMMON_KEYS | _KIND_KEYS[kind]))
        raise ManifestError(
            f"{where}: unknown key '{unknown[0]}' for kind {kind}; allowed: {allowed}"
        )
    settings = entry.get("settings", {})
    if not isinstance(settings, dict):
        raise ManifestError(f"{where}: 'settings' must be a mapping")
    handler_ref = entry.get("handler")
    if not isinstance(handler_ref, str) or handler_ref.count(":") != 1:
        raise ManifestError(
            f"{where}: 'handler' must look like 'functions/file.py:ClassName', "
            f"found {handler_ref!r}"
        )
    if kind == "http":
        fields = _http_fields(where, entry)
    elif kind == "background":
        fields = _background_fields(where, entry)
    else:
        fields = _schedule_fields(where, entry)
    handler = resolve_handler(path.parent, handler_ref, where)
    _check_shape(where, kind, handler, fields.get("methods", ()))
    return FunctionSpec(
        name=name, kind=kind, handler_ref=handler_ref, handler=handler, settings=settings, **fields
    )


def _http_fields(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    route = entry.get("route")
    if not isinstance(route, str) or not route.startswith("/"):
        raise ManifestError(f"{where}: 'route' must be a path starting with '/', found {route!r}")
    methods = entry.get("methods")
    if not isinstance(methods, list) or not methods:
        raise ManifestError(f"{where}: 'methods' must be a non-empty list such as [GET]")
    upper = []
    for method in methods:
        if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
            raise ManifestError(
                f"{where}: method {method!r} is not one of {', '.join(HTTP_METHODS)}"
            )
        upper.append(method.upper())
    queue = entry.get("queue")
    if queue is not None and not (isinstance(queue, str) and _NAME_PATTERN.match(queue)):
        raise ManifestError(f"{where}: 'queue' must be lower_snake_case text, found {queue!r}")
    return {"route": route, "methods": tuple(upper), "queue": queue}


def _background_fields(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    queue = entry.get("queue")
    if not (isinstance(queue, str) and _NAME_PATTERN.match(queue)):
        raise ManifestError(f"{where}: 'queue' must name the queue it consumes, found {queue!r}")
    concurrency = _whole(where, entry, "concurrency", 1, 1, _MAX_CONCURRENCY)
    processes = _whole(where, entry, "processes", 1, 1, _MAX_PROCESSES)
    return {"queue": queue, "concurrency": concurrency, "processes": processes}


def _schedule_fields(where: str, entry: dict[str, Any]) -> dict[str, Any]:
    every = entry.get("every_s")
    if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
        raise ManifestError(f"{where}: 'every_s' must be a number of seconds > 0, found {every!r}")
    return {"every_s": float(every)}


def _whole(where: str, entry: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ManifestError(
            f"{where}: '{key}' must be a whole number {low} to {high}, found {value!r}"
        )
    return value


def _check_unique(path: Path, specs: list[FunctionSpec]) -> None:
    names: set[str] = set()
    routes: dict[tuple[str, str], str] = {}
    for spec in specs:
        if spec.name in names:
            raise ManifestError(f"{path}: function '{spec.name}' is declared twice")
        names.add(spec.name)
        for method in spec.methods:
            key = (method, _normalise_route(spec.route or ""))
            if key in routes:
                raise ManifestError(
                    f"{path}: function '{spec.name}': route {method} {spec.route} is already "
                    f"served by function '{routes[key]}'"
                )
            routes[key] = spec.name


def _normalise_route(route: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", route.rstrip("/") or "/")


def resolve_handler(root: Path, ref: str, where: str) -> type:
    """Import ``file.py:Name`` relative to ``root`` and return the class it names."""
    file_part, _, attr = ref.partition(":")
    file_path = (root / file_part).resolve()
    if file_path.suffix != ".py":
        raise HandlerNotFound(f"{where}: handler file must be a .py file, found '{file_part}'")
    if not file_path.is_file():
        raise HandlerNotFound(f"{where}: handler file '{file_part}' does not exist")
    module = _import_file(root, file_path, where)
    handler = getattr(module, attr, None)
    if handler is None:
        raise HandlerNotFound(f"{where}: '{file_part}' defines no name '{attr}'")
    if not inspect.isclass(handler):
        raise HandlerShapeError(
            f"{where}: '{attr}' in '{file_part}' must be a class, found {type(handler).__name__}"
        )
    return handler


def _import_file(root: Path, file_path: Path, where: str) -> ModuleType:
    try:
        relative = file_path.relative_to(root.resolve())
        module_name = ".".join(relative.with_suffix("").parts)
    except ValueError:
        module_name = f"_bundle_{abs(hash(file_path))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if str(root.resolve()) not in sys.path:
        sys.path.insert(0, str(root.resolve()))
    spec = importlib.util.spec_from_file_location(module_name, file_path)
    if spec is None or spec.loader is None:
        raise ImportModuleError(f"{where}: cannot load '{file_path}'")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise UserCodeSyntaxError(
            f"{where}: syntax error in '{file_path.name}' line {exc.lineno}: {exc.msg}"
        ) from None
    except Exception as exc:
        del sys.modules[module_name]
        raise ImportModuleError(
            f"{where}: importing '{file_path.name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    return module


def _check_shape(where: str, kind: str, handler: type, methods: tuple[str, ...]) -> None:
    needed = {
        "http": [f"on_{method.lower()}" for method in methods],
        "background": ["handle"],
        "schedule": ["run"],
    }[kind]
    for method in needed:
        if not callable(getattr(handler, method, None)):
            raise HandlerShapeError(
                f"{where}: {kind} handler '{handler.__name__}' must define a method '{method}'"
            )
    try:
        params = list(inspect.signature(handler).parameters)
    except (TypeError, ValueError):
        params = []
    if len(params) != 1:
        raise HandlerShapeError(
            f"{where}: handler '{handler.__name__}' must take one constructor argument, the "
            f"function context; it takes {len(params)}"
        )
