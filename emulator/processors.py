"""The two payment processors as the stack and the tests see them: emulators and their admin API.

The emulators (:mod:`emulator`) stand for the contest's external processors, so they run
without our cgroup limits. :class:`Processor` drives any processor's admin endpoints, the
emulator's or the real one's, with the ``X-Rinha-Token`` header.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMULATOR_TOKEN = "123"
"""The processors' initial admin token, as in the contest."""
NAMES = ("default", "fallback")
_TIMEOUT_S = 5.0
_IN_FLIGHT_MARGIN_S = 0.2
_UNKNOWN_PAYMENT = "/payments/00000000-0000-0000-0000-000000000000"


def emulator_argv(
    name: str,
    port: int,
    fee: float,
    *,
    python: str = sys.executable,
    journal: Path | None = None,
) -> list[str]:
    """The command line of one emulator on 127.0.0.1:``port`` (keeping its payments in
    ``journal`` too, if given)."""
    extra = [] if journal is None else ["--journal", str(journal)]
    return [
        python,
        "-m",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--name",
        name,
        "--fee",
        str(fee),
        "--token",
        EMULATOR_TOKEN,
        *extra,
    ]


@dataclass
class Processor:
    """One processor's URL, fee and current admin token."""

    name: str
    url: str
    fee: float
    token: str = EMULATOR_TOKEN

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call ``path`` with the admin token; returns the status and the decoded JSON body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"X-Rinha-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                return response.status, _decode(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read())

    def set_delay(self, delay_ms: int) -> int:
        """Make every payment wait ``delay_ms`` before it is answered; returns the old delay."""
        answer = self._admin("PUT", "/admin/configurations/delay", {"delay": delay_ms})
        return int(answer["was"]) if isinstance(answer, dict) and "was" in answer else 0

    def set_failure(self, failing: bool) -> None:
        """Make payments fail with 500 (without being stored) or succeed again."""
        self._admin("PUT", "/admin/configurations/failure", {"failure": failing})

    def purge(self) -> None:
        """Forget every stored payment."""
        self._admin("POST", "/admin/purge-payments")

    def summary(self, start: str | None = None, end: str | None = None) -> dict[str, Any]:
        """``GET /admin/payments-summary``, over all payments unless both bounds are given."""
        query = "?" + urllib.parse.urlencode({"from": start, "to": end}) if start and end else ""
        return self._admin("GET", "/admin/payments-summary" + query)

    def reset(self) -> None:
        """Back to the start of a test: no delay, not failing, nothing stored.

        A payment sent before the reset may still be in its delay, and would be stored after
        the purge; the old delay bounds how long it can sleep, so the purge waits that long.
        """
        old_delay_ms = self.set_delay(0)
        self.set_failure(False)
        if old_delay_ms:
            time.sleep(old_delay_ms / 1000 + _IN_FLIGHT_MARGIN_S)
        self.purge()

    def is_ready(self) -> bool:
        """Whether it answers HTTP; asks for an unknown payment, which is not rate-limited."""
        try:
            status, _ = self.request("GET", _UNKNOWN_PAYMENT)
        except OSError:
            return False
        return status < 500

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{self.name} processor: {method} {path} answered {status} {answer}")
        return answer


@dataclass(frozen=True)
class Processors:
    """The default and the fallback processor."""

    default: Processor
    fallback: Processor

    def env(self) -> dict[str, str]:
        """The contest's URL variables and the runtime's fee overrides."""
        return {
            "PAYMENT_PROCESSOR_URL_DEFAULT": self.default.url,
            "PAYMENT_PROCESSOR_URL_FALLBACK": self.fallback.url,
            "APP__PROCESSORS__DEFAULT__FEE": str(self.default.fee),
            "APP__PROCESSORS__FALLBACK__FEE": str(self.fallback.fee),
        }

    def reset(self) -> None:
        """Reset both (see :meth:`Processor.reset`)."""
        self.default.reset()
        self.fallback.reset()

    def __iter__(self) -> Iterator[Processor]:
        return iter((self.default, self.fallback))


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
