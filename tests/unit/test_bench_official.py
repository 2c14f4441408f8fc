"""``bench --official``: the contest's scripts copied as they are, their remote imports made
local; tried on scripts of the same shape written here (the contest's are not ours to ship)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import floor, official
from bench.score import totals_from_k6_summary

FINAL = """import { textSummary } from "https://jslib.k6.io/k6-summary/0.1.0/index.js";
import { sleep } from "k6";
import { token } from "./requests.js";
import Big from "https://cdn.jsdelivr.net/npm/big.js@7.0.1/big.min.js";
export default function () { sleep(1); }
"""
REQUESTS = """import { Httpx } from 'https://jslib.k6.io/httpx/0.1.0/index.js';
export const token = __ENV.TOKEN ?? '123';
"""
URLS = [
    "jslib.k6.io/k6-summary/0.1.0/index.js",
    "cdn.jsdelivr.net/npm/big.js@7.0.1/big.min.js",
    "jslib.k6.io/httpx/0.1.0/index.js",
]


@pytest.fixture
def contest(tmp_path: Path) -> Path:
    folder = tmp_path / "contest" / "rinha-test"
    folder.mkdir(parents=True)
    (folder / "rinha-final.js").write_text(FINAL)
    (folder / "requests.js").write_text(REQUESTS)
    return tmp_path / "contest"


@pytest.fixture
def vendor(tmp_path: Path) -> Path:
    folder = tmp_path / "vendor"
    for url in URLS:
        (folder / url).parent.mkdir(parents=True, exist_ok=True)
        (folder / url).write_text(f"// {url}\n")
    return folder


def test_remote_imports_are_found_in_both_quote_styles() -> None:
    assert official.remote_imports(FINAL) == URLS[:2]
    assert official.remote_imports(REQUESTS) == URLS[2:]


def test_only_the_remote_import_urls_change() -> None:
    local = official.localized(FINAL)

    assert 'from "./vendor/jslib.k6.io/k6-summary/0.1.0/index.js";' in local
    assert 'from "./vendor/cdn.jsdelivr.net/npm/big.js@7.0.1/big.min.js";' in local
    assert local.replace("./vendor/", "https://") == FINAL


def test_prepare_copies_the_script_what_it_imports_and_the_vendor_files(
    contest: Path, vendor: Path, tmp_path: Path
) -> None:
    script = official.prepare(contest, vendor, tmp_path / "run", "final")

    assert script == tmp_path / "run" / "rinha-final.js"
    assert script.read_text() == official.localized(FINAL)
    assert (tmp_path / "run" / "requests.js").read_text() == official.localized(REQUESTS)
    for url in URLS:
        assert (tmp_path / "run" / "vendor" / url).read_text() == f"// {url}\n"


def test_a_missing_vendor_file_is_named_with_the_command_that_fetches_it(
    contest: Path, vendor: Path, tmp_path: Path
) -> None:
    (vendor / URLS[2]).unlink()

    with pytest.raises(official.OfficialUnavailable) as refused:
        official.prepare(contest, vendor, tmp_path / "run", "final")

    assert f"https://{URLS[2]}" in str(refused.value)
    assert "python -m bench.official vendor" in str(refused.value)
    assert not (tmp_path / "run").exists()


def test_a_folder_that_is_not_the_contests_checkout_is_refused(
    tmp_path: Path, vendor: Path
) -> None:
    with pytest.raises(official.OfficialUnavailable, match="no rinha-test/ folder"):
        official.prepare(tmp_path, vendor, tmp_path / "run", "final")


def test_a_mode_the_contest_has_no_script_for_is_refused(
    contest: Path, vendor: Path, tmp_path: Path
) -> None:
    with pytest.raises(official.OfficialUnavailable, match="no script for mode 'steady'"):
        official.prepare(contest, vendor, tmp_path / "run", "steady")


def test_fetching_skips_what_the_vendor_folder_holds(contest: Path, vendor: Path) -> None:
    assert official.fetch_vendor(contest, vendor) == []


def test_the_contests_summary_gives_the_fee_charged_not_the_rate() -> None:
    summary = {
        "metrics": {
            "transactions_success": {"count": 10},
            "default_total_requests": {"count": 10},
            "default_total_amount": {"count": 200.5},
            "default_total_fee": {"count": 14.035},
        }
    }

    totals = totals_from_k6_summary(summary)

    assert str(totals.default.fee_rate) == "0.0700"


def test_the_official_floor_answers_on_the_processors_ports_too(tmp_path: Path) -> None:
    config = floor.floor_config(9999, tmp_path, None, (8001, 8002))

    for port in (9999, 8001, 8002):
        assert f"listen 127.0.0.1:{port} backlog=4096;" in config
