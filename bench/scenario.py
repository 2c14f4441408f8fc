"""A scripted run through Nginx: N payments while the processors go through the final test's
stages, audited like the contest and then id by id.

    python -m bench.scenario [--payments 10000] [--rate 300] [--url http://127.0.0.1:9999]

Runs against a stack already up (``make up``): the processors' admin endpoints are reached at
``PAYMENT_PROCESSOR_URL_DEFAULT``/``_FALLBACK`` (default: the local emulators on 8001/8002)
with token ``STACK_PROCESSOR_TOKEN`` (default 123). The final test's ten 30-s stages are
compressed into the run's length (payments / rate seconds). It prints the auditor's
comparisons every 10 s, then where every accepted payment ended up, and exits non-zero if any
payment was lost or charged twice, any audit disagreed, or the totals differ.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.audit import Auditor, check_each, our_summary, totals_equal
from emulator.processors import Processor, Processors

# The final test's stages: (default delay ms, default failing, fallback delay ms, failing).
FINAL_STAGES = [
    (0, False, 0, False),
    (1000, False, 0, False),
    (500, False, 0, False),
    (2000, True, 1000, False),
    (5000, True, 5, False),
    (0, False, 5, True),
    (100, False, 5, False),
    (50, False, 0, False),
    (103, False, 10, False),
    (2000, False, 0, False),
]
# Both processors healthy and quick throughout: the forwarder's cost per payment at its least.
STEADY_STAGES = [(0, False, 0, False)]
STAGES = {"final": FINAL_STAGES, "steady": STEADY_STAGES}
_POST_TIMEOUT_S = 1.5
_SENDER_THREADS = 64
_SETTLE_TIMEOUT_S = 120.0


def _post(url: str) -> tuple[str, bool]:
    correlation_id = str(uuid.uuid4())
    body = f'{{"correlationId":"{correlation_id}","amount":20.05}}'.encode()
    request = urllib.request.Request(
        f"{url}/payments", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=_POST_TIMEOUT_S) as response:
            return correlation_id, response.status in (200, 201, 202, 204)
    except (urllib.error.URLError, OSError):
        return correlation_id, False


def run(
    url: str,
    processors: Processors,
    payments: int,
    rate: float,
    stages: list[tuple[int, bool, int, bool]] = FINAL_STAGES,
) -> int:
    """Drive the scenario; returns the process exit status."""
    for processor in processors:
        processor.reset()
    urllib.request.urlopen(
        urllib.request.Request(f"{url}/purge-payments", method="POST"), timeout=5
    ).read()
    duration_s = payments / rate
    stage_s = duration_s / len(stages)
    auditor = Auditor(url, processors).start()
    accepted: list[str] = []
    refused = 0
    lock = threading.Lock()
    started = time.monotonic()
    stage_index = -1

    def send(_: int) -> None:
        nonlocal refused
        correlation_id, ok = _post(url)
        with lock:
            if ok:
                accepted.append(correlation_id)
            else:
                refused += 1

    with ThreadPoolExecutor(_SENDER_THREADS) as pool:
        for index in range(payments):
            due = started + index / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            wanted = min(int((time.monotonic() - started) / stage_s), len(stages) - 1)
            if wanted != stage_index:
                stage_index = wanted
                d_delay, d_fail, f_delay, f_fail = stages[stage_index]
                processors.default.set_delay(d_delay)
                processors.default.set_failure(d_fail)
                processors.fallback.set_delay(f_delay)
                processors.fallback.set_failure(f_fail)
                print(
                    f"[{time.monotonic() - started:6.1f} s] stage {stage_index + 1}: default "
                    f"{d_delay} ms{' failing' if d_fail else ''}, fallback {f_delay} ms"
                    f"{' failing' if f_fail else ''}",
                    flush=True,
                )
            pool.submit(send, index)
    for processor in processors:  # leave them as the run found them: no delay, not failing
        processor.set_delay(0)
        processor.set_failure(False)
    sent_s = time.monotonic() - started
    print(f"sent {payments} in {sent_s:.1f} s: {len(accepted)} accepted, {refused} refused")
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        summary = our_summary(url)
        recorded = sum(part["totalRequests"] for part in summary.values())
        if recorded >= len(accepted):
            break
        time.sleep(0.5)
    print(f"settled {time.monotonic() - started - sent_s:.1f} s after the last payment")
    time.sleep(3.0)  # let the auditor see windows covering the end of the run
    auditor.stop()
    for comparison in auditor.comparisons:
        mark = "ok " if comparison.equal else "DIFF"
        print(
            f"  audit {mark} {comparison.start} .. {comparison.end} ours {comparison.ours} "
            f"processors {comparison.theirs}"
        )
    holdings = check_each(accepted, processors)
    equal, sides = totals_equal(url, processors)
    print(
        f"accepted {len(accepted)}: default {holdings.default}, fallback {holdings.fallback}, "
        f"lost {len(holdings.lost)}, charged twice {len(holdings.duplicated)}"
    )
    print(
        f"audits {len(auditor.comparisons)}, disagreeing {len(auditor.mismatches)}, "
        f"errors {len(auditor.errors)}; totals equal: {equal} {sides}"
    )
    ok = (
        not holdings.lost
        and not holdings.duplicated
        and not auditor.mismatches
        and equal
        and not auditor.errors
    )
    print("RESULT: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=300.0, help="payments per second")
    parser.add_argument("--url", default=os.environ.get("STACK_URL", "http://127.0.0.1:9999"))
    parser.add_argument(
        "--stages",
        choices=sorted(STAGES),
        default="final",
        help="final: the final test's ten stages, compressed; steady: both processors quick",
    )
    args = parser.parse_args()
    token = os.environ.get("STACK_PROCESSOR_TOKEN", "123")
    processors = Processors(
        Processor(
            "default",
            os.environ.get("PAYMENT_PROCESSOR_URL_DEFAULT", "http://127.0.0.1:8001"),
            0.0,
            token,
        ),
        Processor(
            "fallback",
            os.environ.get("PAYMENT_PROCESSOR_URL_FALLBACK", "http://127.0.0.1:8002"),
            0.0,
            token,
        ),
    )
    sys.exit(run(args.url, processors, args.payments, args.rate, STAGES[args.stages]))


if __name__ == "__main__":
    main()
