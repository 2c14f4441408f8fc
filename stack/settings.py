"""Where the local stack puts things and which ports it uses, read once from the environment.

Every knob is an environment variable so a test can run a second stack beside the first one:

=========================  =====================================  ============================
variable                   meaning                                default
=========================  =====================================  ============================
``STACK_DIR``              data, logs, pid files, sockets         ``var/stack``
``STACK_PORT``             Nginx, the contest's entry point       ``9999``
``STACK_PG_PORT``          PostgreSQL (127.0.0.1 and its socket)  ``54320``
``STACK_MEMCACHED_PORT``   Memcached on 127.0.0.1                 ``21211``
``STACK_DEFAULT_PORT``     the default processor's emulator       ``8001``
``STACK_FALLBACK_PORT``    the fallback processor's emulator      ``8002``
``STACK_FEES``             default and fallback fees              ``0.05,0.15``
``STACK_LIMITS``           ``0`` runs without cgroup limits       ``1``
``STACK_QUEUE_TMPFS_MB``   the queue on a tmpfs of this size      ``0`` (no: the stack folder)
                           (the fault suite fills it; root only)
``PAYMENT_PROCESSOR_URL_DEFAULT`` / ``_FALLBACK``: real processors; no emulators are started.
=========================  =====================================  ============================

The PostgreSQL and Memcached defaults stay off 5432 and 11211, where Debian's own services
listen once their packages are installed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: the runtime instances run from here (``config/``, ``functions.yaml``)."""

REACHABLE_FALLBACK_DIR = Path("/var/tmp")


class SettingsError(ValueError):
    """An environment variable of the stack holds a value it cannot use."""


def _config_file(environ: Mapping[str, str], root: Path) -> Path | None:
    raw = environ.get("STACK_CONFIG")
    if not raw:
        return None
    path = Path(raw) if Path(raw).is_absolute() else root / raw
    if not path.is_file():
        raise SettingsError(f"STACK_CONFIG={raw}: no such file (the instances' config file)")
    return path.resolve()


@dataclass(frozen=True)
class StackSettings:
    """Everything ``up``, ``down`` and ``status`` need to agree on."""

    dir: Path
    port: int = 9999
    pg_port: int = 54320
    memcached_port: int = 21211
    default_port: int = 8001
    fallback_port: int = 8002
    default_fee: float = 0.05
    fallback_fee: float = 0.15
    default_url: str | None = None
    """A real default processor; ``None`` starts an emulator on ``default_port``."""
    fallback_url: str | None = None
    limits: bool = True
    queue_tmpfs_mb: int = 0
    """Mount a tmpfs of this many MiB on the queue folder (a small disk the fault suite can
    fill); 0 keeps the queue in the stack folder."""
    config: Path | None = None
    """The instances' config file (``STACK_CONFIG``); ``None``: the checkout's
    ``config/app.yaml``. ``python -m stack reload`` picks up its changes."""
    pg_user: str = "rinha"
    pg_password: str = "rinha"
    pg_database: str = "rinha"
    root: Path = PROJECT_ROOT

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, root: Path = PROJECT_ROOT) -> StackSettings:
        """Read the ``STACK_*`` variables; a bad value names the variable and what it expects."""
        raw_dir = Path(environ.get("STACK_DIR") or "var/stack")
        fees = _fees(environ.get("STACK_FEES", "0.05,0.15"))
        return cls(
            dir=(raw_dir if raw_dir.is_absolute() else root / raw_dir).resolve(),
            port=_port(environ, "STACK_PORT", 9999),
            pg_port=_port(environ, "STACK_PG_PORT", 54320),
            memcached_port=_port(environ, "STACK_MEMCACHED_PORT", 21211),
            default_port=_port(environ, "STACK_DEFAULT_PORT", 8001),
            fallback_port=_port(environ, "STACK_FALLBACK_PORT", 8002),
            default_fee=fees[0],
            fallback_fee=fees[1],
            default_url=environ.get("PAYMENT_PROCESSOR_URL_DEFAULT") or None,
            fallback_url=environ.get("PAYMENT_PROCESSOR_URL_FALLBACK") or None,
            limits=_flag(environ, "STACK_LIMITS", True),
            queue_tmpfs_mb=_size_mb(environ, "STACK_QUEUE_TMPFS_MB"),
            config=_config_file(environ, root),
            root=root,
        )

    @property
    def url(self) -> str:
        """The backend's URL, the one the load test calls."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def emulated(self) -> bool:
        """Whether the stack runs its own processor emulators."""
        return self.default_url is None and self.fallback_url is None

    def processor_urls(self) -> tuple[str, str]:
        """The default and fallback processors' URLs the instances are given."""
        return (
            self.default_url or f"http://127.0.0.1:{self.default_port}",
            self.fallback_url or f"http://127.0.0.1:{self.fallback_port}",
        )

    @property
    def tools_env_file(self) -> Path:
        """The running stack's connections for ``runtime invoke`` and ``runtime dev``
        (``env_file`` in config/app.yaml); removed by ``down``."""
        return self.dir / "app.env"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.dir / "pids"

    @property
    def reachable_dir(self) -> Path:
        """Where the files other users must reach live (PostgreSQL's data, the sockets).

        ``dir`` itself when every folder above it lets others through; else (a checkout in
        root's 0700 home, say) a folder in ``/var/tmp`` named after ``dir``, since PostgreSQL
        runs as ``postgres`` and Nginx's workers as ``nobody``.
        """
        if _traversable_by_others(self.dir):
            return self.dir
        digest = hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]
        return REACHABLE_FALLBACK_DIR / f"rinha-stack-{digest}"

    @property
    def run_dir(self) -> Path:
        """The instances' sockets; Nginx's workers must be able to reach them."""
        return self.reachable_dir / "run"

    @property
    def postgres_dir(self) -> Path:
        """PostgreSQL's data and socket folders; its ``postgres`` user must reach them."""
        return self.reachable_dir / "postgres"

    @property
    def queue_dir(self) -> Path:
        """Shared by both instances, like the compose volume."""
        return self.dir / "queue"

    @property
    def compose_file(self) -> Path:
        return self.root / "docker-compose.yml"


def _port(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name, "")
    if not text:
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"{name}: expected a TCP port from 1 to 65535, found {text!r}")
    return int(text)


def _fees(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        fees = tuple(float(part) for part in parts)
    except ValueError:
        fees = ()
    if len(fees) != 2 or not all(0 <= fee < 1 for fee in fees):
        raise SettingsError(
            f"STACK_FEES: expected two fractions 'DEFAULT,FALLBACK' such as 0.07,0.10, "
            f"found {text!r}"
        )
    return fees[0], fees[1]


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    text = environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}: expected 1 or 0, found {text!r}")


def _traversable_by_others(path: Path) -> bool:
    """Whether every existing folder from ``/`` down to ``path`` has the others' x bit."""
    for folder in (path, *path.parents):
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            continue  # made later, with mode 0755
        if not mode & 0o001:
            return False
    return True


def _size_mb(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "0").strip() or "0"
    if not text.isdigit():
        raise SettingsError(f"{name}: expected a whole number of MiB such as 16, found {text!r}")
    return int(text)
