"""``python -m stack compose up|down|status``: the compose deployment, built and run for real.

``up`` does on a fresh machine what the contest's harness finds ready: a Docker engine (Debian's,
installed and started when missing: :mod:`stack.engine`), the images no registry here serves
(:mod:`stack.images`), the two processor emulators on the external ``payment-processor``
network as ``payment-processor-default`` and ``payment-processor-fallback`` on port 8080
(``emulator/compose.yml``), then ``docker compose up`` of the project's own
``docker-compose.yml`` with ``deploy/compose.local.yml``, and the harness's own wait
(``GET /payments-summary`` answered). ``down`` takes both down (``--volumes`` forgets the
payments too, ``--engine`` stops a dockerd ``up`` started). ``submission`` writes the folder a
contest entry submits (:mod:`stack.submission`).

The variables of the local stack choose ports and fees: ``STACK_PORT`` (9999),
``STACK_DEFAULT_PORT`` / ``STACK_FALLBACK_PORT`` (8001 / 8002), ``STACK_FEES`` (the final's
0.07,0.10); ``STACK_COMPOSE_PROJECT`` names the compose project (``rinha``) and
``STACK_PROCESSOR_NETWORK`` the processors' network (``payment-processor``), so that a test can
run a deployment of its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from stack import engine, images, probes, submission
from stack.cgroups import CGROUP_ROOT, StackCgroups, Usage
from stack.engine import EngineUnavailable
from stack.settings import PROJECT_ROOT, StackSettings

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
LOCAL_FILE = PROJECT_ROOT / "deploy" / "compose.local.yml"
PROCESSORS_FILE = PROJECT_ROOT / "emulator" / "compose.yml"
SERVICES = ("nginx", "app1", "app2", "worker1", "worker2", "postgres", "memcached")
PROCESSOR_SERVICES = ("payment-processor-default", "payment-processor-fallback")
FINAL_FEES = "0.07,0.10"
_UP_TIMEOUT_S = 1200.0
_DOWN_TIMEOUT_S = 180.0
_READY_TRIES = 15
_READY_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Deployment:
    """One compose deployment: its project names, ports, fees and network."""

    project: str = "rinha"
    port: int = 9999
    default_port: int = 8001
    fallback_port: int = 8002
    default_fee: float = 0.07
    fallback_fee: float = 0.10
    network: str = "payment-processor"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Deployment:
        """From the local stack's ``STACK_*`` variables (fees default to the final's)."""
        settings = StackSettings.from_env({"STACK_FEES": FINAL_FEES, **environ})
        return cls(
            project=environ.get("STACK_COMPOSE_PROJECT") or "rinha",
            port=settings.port,
            default_port=settings.default_port,
            fallback_port=settings.fallback_port,
            default_fee=settings.default_fee,
            fallback_fee=settings.fallback_fee,
            network=environ.get("STACK_PROCESSOR_NETWORK") or "payment-processor",
        )

    @property
    def url(self) -> str:
        """The backend, as the load test calls it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def processor_urls(self) -> tuple[str, str]:
        """The default and fallback processors' published ports (the admin API)."""
        return (
            f"http://127.0.0.1:{self.default_port}",
            f"http://127.0.0.1:{self.fallback_port}",
        )

    def env(self) -> dict[str, str]:
        """What ``docker compose`` interpolates into both files."""
        return {
            **os.environ,
            "STACK_PORT": str(self.port),
            "STACK_DEFAULT_PORT": str(self.default_port),
            "STACK_FALLBACK_PORT": str(self.fallback_port),
            "DEFAULT_FEE": str(self.default_fee),
            "FALLBACK_FEE": str(self.fallback_fee),
            "PROCESSOR_NETWORK": self.network,
            "BASE_IMAGE": images.BASE_IMAGE,
            "COMPOSE_BAKE": "false",  # no buildx here: compose's own BuildKit client builds
        }

    def backend(self, *args: str) -> list[str]:
        """``docker compose`` on the project's compose file with this machine's override."""
        return [
            "docker",
            "compose",
            "-p",
            self.project,
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(LOCAL_FILE),
            *args,
        ]

    def processors(self, *args: str) -> list[str]:
        """``docker compose`` on the emulators' compose file."""
        return [
            "docker",
            "compose",
            "-p",
            f"{self.project}-processors",
            "-f",
            str(PROCESSORS_FILE),
            *args,
        ]

    def _compose_of(self, service: str) -> Callable[..., list[str]]:
        """``processors`` for an emulator's service, ``backend`` for ours."""
        return self.processors if service in PROCESSOR_SERVICES else self.backend

    def run(self, argv: list[str], *, timeout_s: float, out: TextIO | None = None) -> str:
        """Run a compose command; its output goes to ``out`` (or is returned).

        Raises:
            EngineUnavailable: it failed; the message holds the end of its output.
        """
        done = subprocess.run(
            argv,
            env=self.env(),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if out is not None and done.stdout:
            out.write(done.stdout)
            out.flush()
        if done.returncode != 0:
            raise EngineUnavailable(
                f"{' '.join(argv[2:])} failed ({done.returncode}):\n{done.stdout[-4000:]}"
            )
        return done.stdout

    def up(self, *, rebuild: bool = False, out: TextIO = sys.stdout) -> None:
        """Engine, images, processors, then the backend; returns once the harness's wait
        succeeds."""
        started = time.monotonic()
        engine.ensure(out)
        images.ensure(rebuild=rebuild, out=out)
        if not engine.docker("network", "ls", "-q", "-f", f"name=^{self.network}$").strip():
            engine.docker("network", "create", "--driver", "bridge", self.network)
        print("starting the processor emulators...", file=out, flush=True)
        self.run(self.processors("up", "-d", "--wait"), timeout_s=_UP_TIMEOUT_S)
        print(f"docker compose up ({self.project})...", file=out, flush=True)
        # The app's image is built from the checkout every time (cached layers make it quick).
        self.run(self.backend("up", "-d", "--build", "--wait"), timeout_s=_UP_TIMEOUT_S)
        if not self.wait_ready():
            raise EngineUnavailable(f"{self.url}/payments-summary never answered")
        print(
            f"\ncompose up: {self.url} in {time.monotonic() - started:.0f} s\n"
            f"  processors: default {self.processor_urls[0]} (fee {self.default_fee}), "
            f"fallback {self.processor_urls[1]} (fee {self.fallback_fee}), network "
            f"{self.network}\n"
            f"  logs: docker compose -p {self.project} logs SERVICE; stop it with "
            "`make compose-down`",
            file=out,
            flush=True,
        )

    def wait_ready(self, tries: int = _READY_TRIES) -> bool:
        """The contest harness's wait: ``GET /payments-summary`` until it answers."""
        for _ in range(tries):
            if probes.answers_200(lambda: probes.http_get(self.port, "/payments-summary")):
                return True
            time.sleep(_READY_INTERVAL_S)
        return False

    def down(self, *, volumes: bool = False, out: TextIO = sys.stdout) -> None:
        """Take the backend and the processors down (``volumes``: their data too)."""
        if not engine.answers():
            print("no engine answers: nothing to take down", file=out)
            return
        extra = ["-v"] if volumes else []
        self.run(self.backend("down", *extra), timeout_s=_DOWN_TIMEOUT_S, out=out)
        self.run(self.processors("down", *extra), timeout_s=_DOWN_TIMEOUT_S, out=out)
        engine.docker("network", "rm", self.network, check=False)

    def container(self, service: str) -> str | None:
        """The running container of ``service`` (a processor too), or ``None``."""
        found = self.run(self._compose_of(service)("ps", "-q", service), timeout_s=60).split()
        return found[0] if found else None

    def kill(self, service: str, sig: int = signal.SIGKILL) -> None:
        """``docker compose kill -s SIG service``."""
        argv = self._compose_of(service)
        self.run(argv("kill", "-s", signal.Signals(sig).name, service), timeout_s=60)

    def start(self, service: str) -> None:
        """``docker compose start service`` (after a kill), and wait until it is healthy."""
        argv = self._compose_of(service)
        self.run(argv("start", service), timeout_s=120)
        self.run(argv("up", "-d", "--wait", "--no-recreate", service), timeout_s=300)

    def usage(self) -> dict[str, Usage]:
        """Each running service's CPU, throttling and memory, read from its container's
        cgroups."""
        found = {}
        for service in SERVICES:
            container = self.container(service)
            if container is not None:
                cgroups = container_cgroups(container)
                if cgroups is not None:
                    found[service] = cgroups[0].usage(cgroups[1])
        return found

    def status(self, out: TextIO = sys.stdout) -> int:
        """What runs, with usage under the limits; 0 when every service runs."""
        if not engine.answers():
            print("no engine answers", file=out)
            return 3
        from stack.cli import format_usage

        usage = self.usage()
        print(self.url, file=out)
        for service in SERVICES:
            state = "up" if service in usage else "DOWN"
            line = f"  {service:<10} {state:<5}"
            if service in usage:
                line += "  " + format_usage(usage[service])
            print(line, file=out)
        return 0 if len(usage) == len(SERVICES) else 1


def container_cgroups(container: str) -> tuple[StackCgroups, str] | None:
    """The cgroups of a running container: its parents per controller, and its own folder's
    name, from its main process's ``/proc/PID/cgroup``."""
    pid = engine.docker("inspect", "-f", "{{.State.Pid}}", container, check=False).strip()
    if not pid.isdigit() or pid == "0":
        return None
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    parents: dict[str, Path] = {}
    name = ""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller in ("cpu", "cpuacct", "memory"):
                parents[controller] = CGROUP_ROOT / controller / path.lstrip("/").rpartition("/")[0]
                name = path.rpartition("/")[2]
    if len(parents) != 3 or not name:
        return None
    return StackCgroups(parents), name


def main(args: list[str], out: TextIO = sys.stdout) -> int:
    """``python -m stack compose COMMAND``; returns the exit status."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m stack compose", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="engine, images, emulators, docker compose up, wait")
    up.add_argument("--rebuild", action="store_true", help="build every image again")
    down = commands.add_parser("down", help="docker compose down, emulators too")
    down.add_argument("-v", "--volumes", action="store_true", help="forget the payments as well")
    down.add_argument("--engine", action="store_true", help="then stop a dockerd `up` started")
    commands.add_parser("status", help="what runs, with CPU and memory under the limits")
    submit = commands.add_parser(
        "submission",
        help="write the contest entry's folder: this compose with IMAGE and no build step",
        description=submission.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    submit.add_argument("image", help="the pushed image, e.g. docker.io/you/rinha-functions:1")
    submit.add_argument("folder", type=Path, help="where to write docker-compose.yml and deploy/")
    parsed = parser.parse_args(args)
    try:
        if parsed.command == "submission":
            for path in submission.write(PROJECT_ROOT, parsed.image, parsed.folder):
                print(f"wrote {path}", file=out)
            return 0
        deployment = Deployment.from_env(os.environ)
        if parsed.command == "up":
            deployment.up(rebuild=parsed.rebuild, out=out)
            return 0
        if parsed.command == "status":
            return deployment.status(out)
        deployment.down(volumes=parsed.volumes, out=out)
        if parsed.engine:
            engine.stop(out)
        return 0
    except (EngineUnavailable, subprocess.TimeoutExpired, ValueError, OSError) as exc:
        print(f"error: {exc}", file=out)
        return 1
