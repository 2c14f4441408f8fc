"""The bench hands long-lived processors back as it found them, so the next run can take them."""

from __future__ import annotations

from bench.cli import Target, _give_processors_back
from emulator.processors import EMULATOR_TOKEN, Processor, Processors


def test_a_run_against_a_running_backend_gives_the_processors_their_initial_token_back(
    emulators: Processors,
) -> None:
    taken = "the-runs-own-token"
    for processor in emulators:
        initial = Processor(processor.name, processor.url, processor.fee, token=EMULATOR_TOKEN)
        status, _ = initial.request("PUT", "/admin/configurations/token", {"token": taken})
        assert status == 204  # what the test's setup does

    target = Target("http://127.0.0.1:9", emulators.default.url, emulators.fallback.url)
    _give_processors_back(target, taken, EMULATOR_TOKEN)

    for processor in emulators:
        again = Processor(processor.name, processor.url, processor.fee, token=EMULATOR_TOKEN)
        assert again.request("GET", "/admin/payments-summary")[0] == 200
        stale = Processor(processor.name, processor.url, processor.fee, token=taken)
        assert stale.request("GET", "/admin/payments-summary")[0] == 401
