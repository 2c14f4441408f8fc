"""The runtime's own config, and how any config is read: file first, the environment on top.

Precedence, highest first:

1. ``--instance`` for the instance name;
2. the environment: ``APP__<SECTION>__<KEY>=value`` for any key, the bundle's and a function's
   settings included (``APP__FUNCTIONS__HEALTH__CACHE_S=1``), plus the variables a bundle maps
   onto its keys in ``functions.yaml`` (``config.env``);
3. the env file the YAML file names (``env_file``), when it exists: ``NAME=value`` lines read
   as if they were in the environment, under the real one (a local stack writes one with the
   connections of its services, so that ``invoke`` and ``dev`` reach them);
4. the YAML file (``--config``, else ``$APP_CONFIG``, else ``config/app.yaml``);
5. for a function's settings, its entry's ``settings`` in ``functions.yaml``;
6. the defaults written in the schemas (below for the runtime's sections).

One file holds every section: the runtime's (below), the bundle's (its schema is named in
``functions.yaml``) and ``functions.<name>`` for a function's settings. ``runtime.schema``
checks every value at start. A file that holds a secret must not be world-readable.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from runtime.errors import ConfigError
from runtime.schema import Above, AtLeast, Check, EnvText, Range, Secret, build, field_names

ENV_PREFIX = "APP__"
ENV_CONFIG_FILE = "APP_CONFIG"
DEFAULT_CONFIG_FILE = "config/app.yaml"
FUNCTIONS_SECTION = "functions"
"""The config file's section for function settings: ``functions.<name>.<key>``."""


def is_address(text: str) -> bool:
    """``unix:PATH`` or ``HOST:PORT`` with a port from 1 to 65535."""
    if text.startswith("unix:"):
        return len(text) > len("unix:")
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)


def _is_name(text: str) -> bool:
    return bool(text) and text.replace("-", "").replace("_", "").isalnum()


_ADDRESS = Check(is_address, "'unix:PATH' or 'HOST:PORT'")


@dataclass(frozen=True)
class ServerConfig:
    """Where the HTTP functions listen and what a request may carry."""

    bind: Annotated[str, _ADDRESS] = "unix:var/run/{instance}.sock"
    """``unix:PATH`` or ``HOST:PORT``; ``{instance}`` is replaced by the instance name."""
    socket_mode: Annotated[int, Range(0, 0o777)] = 0o666
    max_body_bytes: Annotated[int, Range(256, 1024 * 1024)] = 4096


@dataclass(frozen=True)
class QueueConfig:
    """The durable hand-off from HTTP functions to background functions."""

    dir: str = "var/queue"
    segment_max_bytes: Annotated[int, AtLeast(4096)] = 16 * 1024 * 1024
    commit_interval_ms: Annotated[int, Above(0)] = 100
    """How often consumed positions are saved; items after it are delivered again after a
    crash (background functions are idempotent), so this trades file writes for repeats."""
    poll_interval_ms: Annotated[int, Above(0)] = 20
    """How often a consumer looks for new items while its queue is busy. What arrived meanwhile
    is read as one batch: a longer interval makes fewer, larger batches (cheaper per item for
    whatever the function does per batch), each a longer burst of work."""


@dataclass(frozen=True)
class PostgresConfig:
    """PostgreSQL, reached through pg8000; ``host`` starting with ``/`` is a socket folder."""

    host: str = "127.0.0.1"
    port: Annotated[int, Range(1, 65535)] = 5432
    user: str = "app"
    password: Annotated[str, Secret()] = ""
    database: str = "app"
    connect_timeout_s: Annotated[float, Above(0)] = 5.0


@dataclass(frozen=True)
class MemcachedConfig:
    """Memcached, shared by every instance."""

    server: Annotated[str, _ADDRESS] = "127.0.0.1:11211"
    """``HOST:PORT`` or ``unix:PATH``."""
    timeout_s: Annotated[float, Above(0)] = 0.2
    key_prefix: str = "app:"


@dataclass(frozen=True)
class LoggingConfig:
    """Structured JSON logs, one line an event."""

    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class RuntimeConfig:
    """The runtime's own sections; see the module docstring for precedence."""

    instance: Annotated[str, Check(_is_name, "letters, digits, '-' or '_'")] = "app1"
    state_dir: str = "var"
    manifest: str = "functions.yaml"
    migrations: str = "migrations"
    metrics_dir: str = "var/metrics"
    """Shared by every instance so that a scrape of either adds all of them up."""
    env_file: str = ""
    """``NAME=value`` lines read under the environment when the file exists (ignored when it
    does not): what a local stack tells the tools about its services."""
    server: ServerConfig = field(default_factory=ServerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    memcached: MemcachedConfig = field(default_factory=MemcachedConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def bind(self) -> str:
        """The server's bind address with ``{instance}`` filled in."""
        return self.server.bind.replace("{instance}", self.instance)


RUNTIME_SECTIONS = frozenset(field_names(RuntimeConfig))


@dataclass
class ConfigSource:
    """The config as read, before any schema: one mapping, and where each key came from."""

    raw: dict[str, Any]
    origins: dict[str, str]
    """Dotted key -> ``file``, ``env NAME`` or ``--instance``."""
    file: Path | None = None
    file_world_readable: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    """The environment it was read with (a bundle's own variables are looked up there)."""
    env_file: str = ""
    env_file_names: frozenset[str] = frozenset()
    """The names of ``env`` that came from the env file, not the environment."""

    def env_origin(self, name: str) -> str:
        """How ``origin`` names where variable ``name`` came from."""
        if name in self.env_file_names:
            return f"env file {self.env_file}: {name}"
        return f"env {name}"

    def section(self, keys: frozenset[str] | set[str]) -> dict[str, Any]:
        """The top-level keys in ``keys`` (the rest belong to another schema)."""
        return {key: value for key, value in self.raw.items() if key in keys}

    def origin(self, path: str) -> str | None:
        """Where ``path`` (or the nearest section above it) was set; ``None``: a default."""
        while path:
            if path in self.origins:
                return self.origins[path]
            path = path.rpartition(".")[0]
        return None

    def set(self, path: str, value: Any, origin: str) -> None:
        """Set a dotted key (a bundle's variable for one of its keys), unless set from the
        environment already: ``APP__...`` wins."""
        current = self.origin(path) or ""
        real_env = current.startswith("env ") and not current.startswith("env file")
        if real_env or (current.startswith("env file") and origin.startswith("env file")):
            return
        _set_path(self.raw, path.split("."), value, origin=origin)
        self.origins[path] = origin

    def refuse_world_readable_secrets(self, secret_paths: list[str]) -> None:
        """A secret set in a file that others can read stops the runtime."""
        if not self.file_world_readable or self.file is None:
            return
        if any(self.origin(path) == "file" for path in secret_paths):
            raise ConfigError(
                f"{self.file}: holds a password or token but is world-readable; run "
                f"`chmod o-r {self.file}` or pass the secret through the environment"
            )


def read_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> ConfigSource:
    """Read the config file and lay the environment's ``APP__*`` over it (not yet typed).

    Args:
        path: the YAML file; ``None`` means ``$APP_CONFIG`` or ``config/app.yaml`` if present.
        environ: the environment to read overrides from (``os.environ`` when ``None``).
        instance: the instance name, overriding file and environment (``--instance``).
        data: the file's content given as a mapping instead (no file is read).
    """
    env = os.environ if environ is None else environ
    source = ConfigSource(raw={}, origins={}, env=env)
    file_path = Path(path) if path else None if data is not None else _default_path(env)
    if data is not None:
        source.raw = copy.deepcopy(dict(data))
    elif file_path is not None:
        source.raw = _read_yaml(file_path)
        source.file = file_path
        source.file_world_readable = bool(file_path.stat().st_mode & stat.S_IROTH)
    for leaf in _leaf_paths(source.raw):
        source.origins[leaf] = "file"
    env_file = source.raw.get("env_file")
    from_file: dict[str, str] = {}
    if isinstance(env_file, str) and env_file:
        from_file = {k: v for k, v in read_env_file(Path(env_file)).items() if k not in env}
        env = {**from_file, **env}
        source.env, source.env_file, source.env_file_names = env, env_file, frozenset(from_file)
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            _set_path(source.raw, keys, EnvText(value), origin=name)
            source.origins[".".join(keys)] = source.env_origin(name)
    if instance:
        source.raw["instance"] = instance
        source.origins["instance"] = "--instance"
    return source


def runtime_config(source: ConfigSource) -> RuntimeConfig:
    """The runtime's sections of ``source``, typed and checked (other sections are left)."""
    return build(RuntimeConfig, source.section(RUNTIME_SECTIONS))


def load_runtime_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> RuntimeConfig:
    """``read_config`` then ``runtime_config``: the runtime's sections alone."""
    return runtime_config(read_config(path, environ=environ, instance=instance))


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines (``#`` comments and blank lines skipped); ``{}`` without the file.

    Raises:
        ConfigError: a line that is not ``NAME=value``.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the env file ({exc.strerror})") from None
    found = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise ConfigError(f"{path}:{number}: expected NAME=value, found {line[:60]!r}")
        found[name.strip()] = value.strip()
    return found


def _default_path(env: Mapping[str, str]) -> Path | None:
    if env.get(ENV_CONFIG_FILE):
        return Path(env[ENV_CONFIG_FILE])
    candidate = Path(DEFAULT_CONFIG_FILE)
    return candidate if candidate.exists() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, found {type(data).__name__}")
    return data


def _leaf_paths(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            paths += _leaf_paths(value, path)
        else:
            paths.append(path)
    return paths


def _set_path(raw: dict[str, Any], keys: list[str], value: Any, *, origin: str) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{key}' is not a section, it cannot hold '{keys[-1]}'")
        node = child
    node[keys[-1]] = value
