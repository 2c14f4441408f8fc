"""Load and validate ``functions.yaml``, the bundle manifest, and resolve what it names.

A manifest describes a bundle: its functions, the queues between them, and optionally the
bundle's own config schema and metrics. References are ``file.py:Name``, the file relative to
the manifest::

    config:                                  # optional: the bundle's own config sections
      schema: app/config.py:AppConfig        #   a dataclass tree (runtime/schema.py)
      env:                                   #   other variables that set one of its keys
        UPSTREAM_URL: upstream.url
    metrics: app/metrics.py:AppMetrics       # optional: built once per process with the
                                             #   runtime's metrics registry
    queues:                                  # every queue a function puts to or consumes
      jobs:
        record: app/job.py:Job               #   optional: encode()/decode(); JSON otherwise

    functions:
      - name: submit
        handler: functions/submit.py:Submit  # a class taking one argument, its context
        kind: http                           # http | background | schedule
        route: /jobs                         # http: a Falcon route template
        methods: [POST]                      # http: the methods it answers
        queue: jobs                          # http: the queue it puts to (optional);
                                             # background: the queue it consumes
        concurrency: 256                     # background: items in flight per process
        processes: 1                         # background: processes per instance
        consumers: each                      # background: each (every instance reads its
                                             #   own journal) | one (one process in the
                                             #   deployment reads them all, the others
                                             #   stand by and take over when it stops)
        every_s: 1.0                         # schedule: seconds between runs
        settings: {}                         # values for the handler's Settings dataclass

A handler declares its settings as a nested dataclass named ``Settings`` (every field with a
default); ``context.settings`` is then an instance of it, built from ``settings`` here and
``functions.<name>`` in the config. Every mistake stops the runtime with the manifest's path,
the entry or key, and what is wrong; each queue must have exactly one consuming function and
at least one function that puts to it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from runtime.config import FUNCTIONS_SECTION, RUNTIME_SECTIONS
from runtime.errors import (
    ConfigError,
    HandlerNotFound,
    HandlerShapeError,
    ImportModuleError,
    ManifestError,
    QueueWiringError,
    SettingsError,
    UserCodeSyntaxError,
)
from runtime.schema import build, check_schema, has_path

KINDS = ("http", "background", "schedule")
ROLES = ("all", "http", "workers")
"""What ``serve --role`` may run: every process, the HTTP server alone, or the background and
scheduled functions alone (each in its own container, under its own CPU limit)."""
KINDS_OF_ROLE = {
    "all": ("http", "background", "schedule"),
    "http": ("http",),
    "workers": ("background", "schedule"),
}
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_TOP_KEYS = {"functions", "config", "metrics", "queues"}
_COMMON_KEYS = {"name", "handler", "kind", "settings"}
_KIND_KEYS = {
    "http": {"route", "methods", "queue"},
    "background": {"queue", "concurrency", "processes", "consumers"},
    "schedule": {"every_s"},
}
_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_NAME_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]*$")
_MAX_CONCURRENCY = 4096
_MAX_PROCESSES = 16
CONSUMERS = ("each", "one")


@dataclass(frozen=True)
class FunctionSpec:
    """One validated manifest entry with its handler class resolved and settings typed."""

    name: str
    kind: str
    handler_ref: str
    handler: type
    settings: Any = None
    """An instance of the handler's ``Settings``, from the manifest alone; ``None`` if the
    handler declares none. The config's ``functions.<name>`` may override it."""
    route: str | None = None
    methods: tuple[str, ...] = ()
    queue: str | None = None
    concurrency: int = 1
    processes: int = 1
    consumers: str = "each"
    """``one``: a single process in the whole deployment consumes the queue at a time."""
    every_s: float = 0.0
    settings_given: tuple[str, ...] = ()
    """The settings keys the manifest entry sets itself (the rest are defaults)."""

    @property
    def settings_schema(self) -> type | None:
        """The handler's ``Settings`` dataclass, if it declares one."""
        return _settings_schema(self.handler)


@dataclass(frozen=True)
class QueueSpec:
    """A queue between functions and the type of its records (``None``: JSON values)."""

    name: str
    record: type | None = None
    record_ref: str | None = None


@dataclass(frozen=True)
class Manifest:
    """The bundle: every function in manifest order, its queues, config schema and metrics."""

    path: Path
    functions: tuple[FunctionSpec, ...]
    queues: dict[str, QueueSpec] = field(default_factory=dict)
    config_schema: type | None = None
    config_env: dict[str, str] = field(default_factory=dict)
    """Environment variable -> the dotted key of the bundle's config it sets."""
    metrics: type | None = None

    def of_kind(self, kind: str) -> list[FunctionSpec]:
        """The functions of one kind, in manifest order."""
        return [spec for spec in self.functions if spec.kind == kind]

    def function(self, name: str) -> FunctionSpec:
        """The function called ``name``.

        Raises:
            KeyError: there is none.
        """
        for spec in self.functions:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def root(self) -> Path:
        """The folder that handler references are relative to."""
        return self.path.parent


def load_manifest(path: str | Path) -> Manifest:
    """Read, validate and resolve the manifest at ``path``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or "functions" not in data:
        raise ManifestError(f"{path}: expected a mapping with a 'functions' list")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ManifestError(
            f"{path}: unknown key '{unknown[0]}'; allowed: {', '.join(sorted(_TOP_KEYS))}"
        )
    entries = data["functions"]
    if not isinstance(entries, list) or not entries:
        raise ManifestError(f"{path}: 'functions' must be a non-empty list of entries")
    config_schema, config_env = _config_section(path, data.get("config"))
    metrics = _metrics_class(path, data.get("metrics"))
    queues = _queues_section(path, data.get("queues"))
    specs = [_parse_entry(path, index, entry) for index, entry in enumerate(entries)]
    _check_unique(path, specs)
    _check_wiring(path, specs, queues)
    return Manifest(
        path=path,
        functions=tuple(specs),
        queues=queues,
        config_schema=config_schema,
        config_env=config_env,
        metrics=metrics,
    )


# --- the bundle's sections ------------------------------------------------------------------


def _config_section(path: Path, section: Any) -> tuple[type | None, dict[str, str]]:
    if section is None:
        return None, {}
    where = f"{path}: config"
    if not isinstance(section, dict) or "schema" not in section:
        raise ManifestError(f"{where}: expected a mapping with 'schema' (and optionally 'env')")
    unknown = sorted(set(section) - {"schema", "env"})
    if unknown:
        raise ManifestError(f"{where}: unknown key '{unknown[0]}'; allowed: env, schema")
    schema = _resolve_ref(path, section["schema"], f"{where}.schema")
    try:
        check_schema(schema, f"{where}.schema")
    except ConfigError as exc:
        raise ManifestError(str(exc)) from None
    clashes = sorted(
        f.name
        for f in dataclasses.fields(schema)
        if f.name in RUNTIME_SECTIONS or f.name == FUNCTIONS_SECTION
    )
    if clashes:
        raise ManifestError(
            f"{where}.schema: {schema.__name__}.{clashes[0]} has the name of one of the "
            f"runtime's own sections ({', '.join(sorted(RUNTIME_SECTIONS))}, functions); "
            "rename it"
        )
    env = section.get("env", {})
    if not isinstance(env, dict):
        raise ManifestError(f"{where}.env: expected a mapping VARIABLE: dotted.key")
    for name, key in env.items():
        if not isinstance(name, str) or not _ENV_NAME_PATTERN.match(name):
            raise ManifestError(f"{where}.env: {name!r} is not an environment variable name")
        if not isinstance(key, str) or not has_path(schema, key):
            raise ManifestError(
                f"{where}.env: {name} names {key!r}, which is not a key of {schema.__name__}"
            )
    return schema, dict(env)


def _metrics_class(path: Path, ref: Any) -> type | None:
    if ref is None:
        return None
    where = f"{path}: metrics"
    metrics = _resolve_ref(path, ref, where)
    _check_one_argument(where, metrics, "the runtime's metrics registry")
    return metrics


def _queues_section(path: Path, section: Any) -> dict[str, QueueSpec]:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ManifestError(f"{path}: 'queues' must be a mapping of queue name to its options")
    queues = {}
    for name, options in section.items():
        where = f"{path}: queue '{name}'"
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise ManifestError(f"{path}: queue name {name!r} must be lower_snake_case text")
        options = {} if options is None else options
        if not isinstance(options, dict) or set(options) - {"record"}:
            raise ManifestError(f"{where}: expected a mapping with at most 'record'")
        ref = options.get("record")
        record = None if ref is None else _resolve_ref(path, ref, f"{where}: record")
        if record is not None:
            _check_record_type(f"{where}: record", record)
        queues[name] = QueueSpec(name, record, ref)
    return queues


def _check_record_type(where: str, record: type) -> None:
    decode = inspect.getattr_static(record, "decode", None)
    if not callable(getattr(record, "encode", None)) or not isinstance(
        decode, classmethod | staticmethod
    ):
        raise HandlerShapeError(
            f"{where}: '{record.__name__}' must define encode(self) -> bytes and a classmethod "
            "decode(data: bytes), the one writer and the one reader of its records"
        )


def _resolve_ref(path: Path, ref: Any, where: str) -> type:
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ManifestError(f"{where}: must look like 'folder/file.py:ClassName', found {ref!r}")
    return resolve_handler(path.parent, ref, where)


# --- functions --------------------------------------------------------------------------------


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
    if settings is None:
        settings = {}
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
    typed = _typed_settings(where, handler, settings)
    return FunctionSpec(
        name=name,
        kind=kind,
        handler_ref=handler_ref,
        handler=handler,
        settings=typed,
        settings_given=tuple(settings),
        **fields,
    )


def _settings_schema(handler: type) -> type | None:
    schema = inspect.getattr_static(handler, "Settings", None)
    return schema if isinstance(schema, type) else None


def _typed_settings(where: str, handler: type, settings: dict[str, Any]) -> Any:
    schema = _settings_schema(handler)
    if schema is None:
        if settings:
            raise SettingsError(
                f"{where}: 'settings' given, but '{handler.__name__}' declares no Settings "
                "dataclass to hold them; add one or remove 'settings'"
            )
        return None
    try:
        check_schema(schema, f"{where}: {handler.__name__}.Settings")
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    required = [f.name for f in dataclasses.fields(schema) if _has_no_default(f)]
    if required:
        raise SettingsError(
            f"{where}: {handler.__name__}.Settings.{required[0]} needs a default: settings "
            "tune a function; what each deployment must give belongs in the bundle's config"
        )
    try:
        return build(schema, settings, "settings")
    except ConfigError as exc:
        raise SettingsError(f"{where}: {exc}") from None


def _has_no_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


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
    consumers = entry.get("consumers", "each")
    if consumers not in CONSUMERS:
        raise ManifestError(
            f"{where}: 'consumers' must be one of {', '.join(CONSUMERS)}, found {consumers!r}"
        )
    return {
        "queue": queue,
        "concurrency": concurrency,
        "processes": processes,
        "consumers": consumers,
    }


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


def _check_wiring(path: Path, specs: list[FunctionSpec], queues: dict[str, QueueSpec]) -> None:
    """Each queue named is declared, is put to by some function and consumed by exactly one.

    A typo in a queue's name, or a consumer removed, would otherwise leave items accepted into
    a queue that nobody reads, without a word.
    """
    declared = ", ".join(sorted(queues)) or "none"
    producers: dict[str, list[str]] = {name: [] for name in queues}
    consumers: dict[str, list[str]] = {name: [] for name in queues}
    for spec in specs:
        if spec.queue is None:
            continue
        if spec.queue not in queues:
            raise QueueWiringError(
                f"{path}: function '{spec.name}': queue '{spec.queue}' is not declared under "
                f"'queues' (declared: {declared})"
            )
        (consumers if spec.kind == "background" else producers)[spec.queue].append(spec.name)
    for name in queues:
        put_by, taken_by = producers[name], consumers[name]
        if put_by and not taken_by:
            raise QueueWiringError(
                f"{path}: queue '{name}' is put to by {_names(put_by)} but no background "
                "function consumes it: its items would wait forever; declare a background "
                f"function with 'queue: {name}'"
            )
        if taken_by and not put_by:
            raise QueueWiringError(
                f"{path}: queue '{name}' is consumed by {_names(taken_by)} but no function "
                f"puts to it; give the producing http function 'queue: {name}'"
            )
        if not taken_by:
            raise QueueWiringError(f"{path}: queue '{name}' is declared but no function uses it")
        if len(taken_by) > 1:
            raise QueueWiringError(
                f"{path}: queue '{name}' is consumed by {_names(taken_by)}; a queue has one "
                "consuming function (use 'processes' or 'concurrency' for more hands)"
            )


def _names(names: list[str]) -> str:
    quoted = [f"'{name}'" for name in names]
    return f"function{'s' if len(names) > 1 else ''} {', '.join(quoted)}"


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
    _check_one_argument(where, handler, "the function context")


def _check_one_argument(where: str, cls: type, what: str) -> None:
    try:
        params = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        params = []
    if len(params) != 1:
        raise HandlerShapeError(
            f"{where}: '{cls.__name__}' must take one constructor argument, {what}; it takes "
            f"{len(params)}"
        )
