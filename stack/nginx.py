"""Nginx for the local stack and the tests, rendered from the compose stack's own config.

``deploy/nginx.conf`` is the one configuration: compose mounts it unchanged, and
:func:`render_config` swaps in only what differs on this machine (the listen address, the
instances' socket paths, the pid file and the temp folders). A directive the renderer expects
but cannot find is an error, so the two cannot drift apart silently.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from stack.settings import PROJECT_ROOT

TEMPLATE = PROJECT_ROOT / "deploy" / "nginx.conf"

_PID_RE = re.compile(r"^(\s*)pid\s+[^;]+;", re.MULTILINE)
_LISTEN_RE = re.compile(r"^(\s*)listen\s+9999\b", re.MULTILINE)
_UPSTREAM_SERVER_RE = re.compile(r"^(\s*)server\s+unix:\S+?(\s[^;]*)?;\n", re.MULTILINE)
_HTTP_RE = re.compile(r"^http\s*\{\n", re.MULTILINE)


class NginxConfigError(ValueError):
    """The config template lacks a directive the local stack replaces."""


_FAIL_TIMEOUT_RE = re.compile(r"\bfail_timeout=(\d+(?:\.\d+)?)(ms|s)?\b")


def fail_timeout_s(config: str | None = None) -> float:
    """The longest ``fail_timeout`` of an upstream server in ``config`` (deploy/nginx.conf by
    default): how long Nginx leaves out an instance it saw fail (10 s, Nginx's default, when
    the config sets none)."""
    text = TEMPLATE.read_text() if config is None else config
    found = [
        float(value) / (1000 if unit == "ms" else 1)
        for value, unit in _FAIL_TIMEOUT_RE.findall(text)
    ]
    return max(found, default=10.0)


def render_config(template: str, *, upstream_sockets: Sequence[Path], port: int, dir: Path) -> str:
    """The template with a loopback ``port``, these upstream sockets and files under ``dir``."""
    if not upstream_sockets:
        raise NginxConfigError("at least one upstream socket is needed")
    text = _sub_once(_PID_RE, lambda m: f"{m[1]}pid {dir / 'nginx.pid'};", template, "pid")
    text = _sub_once(_LISTEN_RE, lambda m: f"{m[1]}listen 127.0.0.1:{port}", text, "listen 9999")
    servers = list(_UPSTREAM_SERVER_RE.finditer(text))
    if not servers:
        raise NginxConfigError("no 'server unix:...;' line in the upstream block")
    indent, params = servers[0][1], servers[0][2] or ""
    lines = "".join(f"{indent}server unix:{path}{params};\n" for path in upstream_sockets)
    text = (
        text[: servers[0].start()] + lines + _UPSTREAM_SERVER_RE.sub("", text[servers[0].end() :])
    )
    temp = dir / "tmp"
    paths = f"    client_body_temp_path {temp / 'body'};\n    proxy_temp_path {temp / 'proxy'};\n"
    return _sub_once(_HTTP_RE, lambda m: m[0] + paths, text, "http {")


def write_config(
    upstream_sockets: Sequence[Path], port: int, dir: Path, *, template: Path = TEMPLATE
) -> Path:
    """Render :data:`TEMPLATE` into ``dir/nginx.conf`` and make its folders; returns the path."""
    (dir / "tmp").mkdir(parents=True, exist_ok=True)
    conf = dir / "nginx.conf"
    conf.write_text(
        render_config(template.read_text(), upstream_sockets=upstream_sockets, port=port, dir=dir)
    )
    return conf


def argv(conf: Path, dir: Path) -> list[str]:
    """Nginx in the foreground with ``conf``; errors before the config is read go to stderr."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return [binary, "-c", str(conf), "-p", f"{dir}/", "-e", "stderr", "-g", "daemon off;"]


def _sub_once(
    pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str], text: str, what: str
) -> str:
    new, count = pattern.subn(repl, text, count=1)
    if count != 1:
        raise NginxConfigError(f"deploy/nginx.conf: expected a '{what}' directive, found none")
    return new
