"""One typed config for the runtime and its functions.

Precedence, highest first:

1. the environment: ``APP__<SECTION>__<KEY>=value`` (value parsed as a YAML scalar, so
   ``APP__BREAKER__FAILURE_THRESHOLD=3`` is an int), plus the contest's own variables
   ``PAYMENT_PROCESSOR_URL_DEFAULT`` and ``PAYMENT_PROCESSOR_URL_FALLBACK``;
2. the YAML file (``--config``, else ``$APP_CONFIG``, else ``config/app.yaml``);
3. the defaults written in the dataclasses below.

Every value is checked at start: an unknown key, a wrong type or a value out of range stops the
runtime with the key's dotted path and what was expected. A file that holds a secret (a
password or a token) must not be world-readable.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ConfigError

ENV_PREFIX = "APP__"
ENV_CONFIG_FILE = "APP_CONFIG"
DEFAULT_CONFIG_FILE = "config/app.yaml"
_CONTEST_ENV = {
    "PAYMENT_PROCESSOR_URL_DEFAULT": ("processors", "default", "url"),
    "PAYMENT_PROCESSOR_URL_FALLBACK": ("processors", "fallback", "url"),
}
_SECRET_KEYS = frozenset({"password", "token"})


@dataclass(frozen=True)
class ServerConfig:
    """Where the HTTP functions listen and what a request may carry."""

    bind: str = "unix:var/run/{instance}.sock"
    """``unix:PATH`` or ``HOST:PORT``; ``{instance}`` is replaced by the instance name."""
    socket_mode: int = 0o666
    max_body_bytes: int = 4096


@dataclass(frozen=True)
class QueueConfig:
    """The durable hand-off from HTTP functions to background functions."""

    dir: str = "var/queue"
    segment_max_bytes: int = 16 * 1024 * 1024
    commit_interval_ms: int = 100
    """How often consumed positions are saved; items after it are redelivered after a crash
    (background functions are idempotent), so this trades file writes for redelivery."""
    poll_interval_ms: int = 20
    """How often a consumer looks for new items. A consumer reads what arrived meanwhile as one
    batch: a longer interval makes fewer, larger batches, cheaper for PostgreSQL (the forwarder
    claims each batch in one statement), but each is one burst of work for the forwarder and
    the processor, and the kernel lets a burst run to its end before a request that woke
    meanwhile on the same CPU is served. Measured at 400 payments a second through Nginx on the
    2-core machine: 20 ms gave p99 2.2-2.4 ms and 50 ms 2.7-3.0 ms, for about 40% more CPU in
    the workers and PostgreSQL; latency is what the contest scores."""


@dataclass(frozen=True)
class PostgresConfig:
    """PostgreSQL, reached through pg8000; ``host`` starting with ``/`` is a socket folder."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "rinha"
    password: str = ""
    database: str = "rinha"
    connect_timeout_s: float = 5.0
    batch_max: int = 500
    batch_linger_ms: float = 50.0
    """How long the forwarder's writes that nobody waits on (a payment's final record, whose
    queue item is acknowledged on commit) wait for company: fewer, larger round trips. Keep it
    well under the auditor's 2 s margin; a write somebody waits on (a claim) goes at once."""


@dataclass(frozen=True)
class MemcachedConfig:
    """Memcached, shared by every instance for processor health and the breaker."""

    server: str = "127.0.0.1:11211"
    """``HOST:PORT`` or ``unix:PATH``."""
    timeout_s: float = 0.2
    key_prefix: str = "rinha:"


@dataclass(frozen=True)
class ProcessorConfig:
    """One payment processor: where it is and what it charges (a fraction, 0.05 = 5%)."""

    url: str
    fee: float


def _default_processors() -> dict[str, ProcessorConfig]:
    return {
        "default": ProcessorConfig(url="http://127.0.0.1:8001", fee=0.05),
        "fallback": ProcessorConfig(url="http://127.0.0.1:8002", fee=0.15),
    }


@dataclass(frozen=True)
class ForwarderConfig:
    """How payments are sent to the processors."""

    connect_timeout_s: float = 1.0
    request_timeout_s: float = 8.0
    """Past this an attempt is uncertain and is settled with ``GET /payments/{id}``."""
    retry_initial_ms: int = 20
    retry_max_ms: int = 1000
    unpin_after_s: float = 60.0
    """An uncertain attempt may only go elsewhere once the processor has answered 404 for it
    this long after the attempt was sent. Processors store a timed-out payment after their
    delay, so this must exceed the longest delay a processor may apply (the contest's is 5 s):
    shorter, and a payment can be charged twice."""


@dataclass(frozen=True)
class BreakerConfig:
    """The circuit breaker per processor, shared through Memcached."""

    failure_threshold: int = 5
    open_s: float = 30.0
    failure_window_s: float = 10.0


@dataclass(frozen=True)
class RouterConfig:
    """How a payment's processor is chosen."""

    slow_ms: float = 1500.0
    """A processor answering slower than this is avoided while the other one is usable."""
    max_wait_s: float = 0.0
    """How long a payment may wait for the cheaper processor before it may take the dearer one."""
    health_min_interval_s: float = 5.1
    """Spacing between two reads of one processor's service-health (its limit is 1 per 5 s)."""
    state_cache_ms: float = 100.0
    """How long a worker reuses health and breaker state read from Memcached."""


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what a payment may be."""

    max_amount: Decimal = Decimal("1000000.00")


@dataclass(frozen=True)
class PurgeConfig:
    """``POST /purge-payments``: off, open, or guarded by a token in ``X-Purge-Token``."""

    enabled: bool = True
    token: str = ""


@dataclass(frozen=True)
class LoggingConfig:
    """Structured JSON logs, one line an event."""

    level: str = "info"


@dataclass(frozen=True)
class Config:
    """The whole runtime config; see the module docstring for precedence."""

    instance: str = "app1"
    state_dir: str = "var"
    manifest: str = "functions.yaml"
    migrations: str = "migrations"
    metrics_dir: str = "var/metrics"
    """Shared by every instance so that ``GET /metrics`` on either adds all of them up."""
    server: ServerConfig = field(default_factory=ServerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    memcached: MemcachedConfig = field(default_factory=MemcachedConfig)
    processors: dict[str, ProcessorConfig] = field(default_factory=_default_processors)
    forwarder: ForwarderConfig = field(default_factory=ForwarderConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    purge: PurgeConfig = field(default_factory=PurgeConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def bind(self) -> str:
        """The server's bind address with ``{instance}`` filled in."""
        return self.server.bind.replace("{instance}", self.instance)


_LOG_LEVELS = ("debug", "info", "warning", "error")
_MAX_STORABLE_AMOUNT = Decimal("1000000000000")
_REQUIRED_PROCESSORS = ("default", "fallback")


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> Config:
    """Read the config file, apply the environment over it and validate the result.

    Args:
        path: the YAML file; ``None`` means ``$APP_CONFIG`` or ``config/app.yaml`` if present.
        environ: the environment to read overrides from (``os.environ`` when ``None``).
        instance: the instance name, overriding file and environment (``--instance``).
    """
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    file_path = Path(path) if path else _default_path(env)
    if file_path is not None:
        raw = _read_yaml(file_path)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            _set_path(raw, keys, _EnvText(value), origin=name)
        elif name in _CONTEST_ENV and value:
            _set_path(raw, list(_CONTEST_ENV[name]), value, origin=name)
    if instance:
        raw["instance"] = instance
    config = _build(Config, raw, "")
    validate_config(config)
    return config


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
    if _holds_secret(data) and path.stat().st_mode & stat.S_IROTH:
        raise ConfigError(
            f"{path}: holds a password or token but is world-readable; run `chmod o-r {path}`"
            " or pass the secret through the environment"
        )
    return data


def _holds_secret(data: Any) -> bool:
    if isinstance(data, dict):
        return any(
            (key in _SECRET_KEYS and value not in ("", None)) or _holds_secret(value)
            for key, value in data.items()
        )
    return False


class _EnvText(str):
    """A value from the environment: text until the schema says which type it must be."""


def _parse_scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if isinstance(value, dict | list) or value is None else value


def _set_path(raw: dict[str, Any], keys: list[str], value: Any, *, origin: str) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: '{key}' is not a section, it cannot hold '{keys[-1]}'")
        node = child
    node[keys[-1]] = value


def _build(cls: type, raw: Any, path: str) -> Any:
    """Turn ``raw`` into an instance of dataclass ``cls``, naming ``path`` on any error."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, found {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(path, unknown[0])}: unknown key; expected one of {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: required but missing")
    return cls(**values)


def _coerce(kind: Any, value: Any, path: str) -> Any:
    if isinstance(value, _EnvText):
        # A secret like "0123" stays text; a number or a flag is parsed as YAML would.
        value = str(value) if kind is str or kind is Decimal else _parse_scalar(value)
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, path)
    if origin is dict:
        _, value_kind = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, found {_describe(value)}")
        return {key: _coerce(value_kind, item, _join(path, key)) for key, item in value.items()}
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{path}: unions are not supported in the schema")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, found {_describe(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected a whole number, found {_describe(value)}")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, found {_describe(value)}")
    if kind is Decimal:
        try:
            parsed = Decimal(str(value)) if not isinstance(value, bool) else None
        except InvalidOperation:
            parsed = None
        if parsed is None or not parsed.is_finite():
            raise ConfigError(f"{path}: expected a decimal number, found {_describe(value)}")
        return parsed
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, found {_describe(value)}")
    raise ConfigError(f"{path}: the schema has a type the loader does not know: {kind!r}")


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_config(config: Config) -> None:
    """Check ranges and relations the types alone cannot express."""
    _check(
        bool(config.instance.replace("-", "").replace("_", "").isalnum()),
        "instance",
        f"expected letters, digits, '-' or '_', found {config.instance!r}",
    )
    _check(
        config.bind.startswith("unix:") or _is_host_port(config.bind),
        "server.bind",
        f"expected 'unix:PATH' or 'HOST:PORT', found {config.server.bind!r}",
    )
    _check(
        256 <= config.server.max_body_bytes <= 1024 * 1024,
        "server.max_body_bytes",
        "expected 256 to 1048576",
    )
    _check(
        config.queue.segment_max_bytes >= 4096, "queue.segment_max_bytes", "expected at least 4096"
    )
    _check(config.queue.commit_interval_ms > 0, "queue.commit_interval_ms", "expected > 0")
    _check(config.queue.poll_interval_ms > 0, "queue.poll_interval_ms", "expected > 0")
    _check(0 < config.postgres.port < 65536, "postgres.port", "expected 1 to 65535")
    _check(config.postgres.batch_max >= 1, "postgres.batch_max", "expected at least 1")
    _check(
        0 <= config.postgres.batch_linger_ms <= 1000,
        "postgres.batch_linger_ms",
        "expected 0 to 1000",
    )
    _check(
        config.memcached.server.startswith("unix:") or _is_host_port(config.memcached.server),
        "memcached.server",
        f"expected 'unix:PATH' or 'HOST:PORT', found {config.memcached.server!r}",
    )
    for name in _REQUIRED_PROCESSORS:
        _check(name in config.processors, f"processors.{name}", "required but missing")
    for name, processor in config.processors.items():
        _check(
            processor.url.startswith(("http://", "https://")),
            f"processors.{name}.url",
            f"expected an http:// or https:// URL, found {processor.url!r}",
        )
        _check(
            0 <= processor.fee < 1,
            f"processors.{name}.fee",
            f"expected a fraction from 0 to 1 (0.05 is 5%), found {processor.fee}",
        )
    forwarder = config.forwarder
    _check(forwarder.connect_timeout_s > 0, "forwarder.connect_timeout_s", "expected > 0")
    _check(forwarder.request_timeout_s > 0, "forwarder.request_timeout_s", "expected > 0")
    _check(
        0 < forwarder.retry_initial_ms <= forwarder.retry_max_ms,
        "forwarder.retry_initial_ms",
        "expected > 0 and at most forwarder.retry_max_ms",
    )
    _check(
        forwarder.unpin_after_s >= 2 * forwarder.request_timeout_s,
        "forwarder.unpin_after_s",
        "expected at least twice forwarder.request_timeout_s",
    )
    _check(config.breaker.failure_threshold >= 1, "breaker.failure_threshold", "expected >= 1")
    _check(config.breaker.open_s > 0, "breaker.open_s", "expected > 0")
    _check(config.breaker.failure_window_s > 0, "breaker.failure_window_s", "expected > 0")
    _check(
        config.router.health_min_interval_s >= 5,
        "router.health_min_interval_s",
        "expected at least 5 (the processors allow one call per 5 s)",
    )
    _check(config.router.slow_ms > 0, "router.slow_ms", "expected > 0")
    _check(config.router.max_wait_s >= 0, "router.max_wait_s", "expected >= 0")
    _check(
        0 < config.limits.max_amount < _MAX_STORABLE_AMOUNT,
        "limits.max_amount",
        f"expected > 0 and below {_MAX_STORABLE_AMOUNT} (the payments table's numeric(14, 2))",
    )
    _check(
        config.logging.level in _LOG_LEVELS,
        "logging.level",
        f"expected one of {', '.join(_LOG_LEVELS)}, found {config.logging.level!r}",
    )


def _check(ok: bool, path: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{path}: {message}")


def _is_host_port(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)
