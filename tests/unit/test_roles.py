"""``serve --role``: which of an instance's processes each role runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import testing
from runtime.bundle import Bundle
from runtime.manifest import ROLES
from runtime.supervisor import children_for, unit_name

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return testing.bundle(ROOT / "functions.yaml")


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("http", ["http"]),
        ("workers", ["forwarder-0", "health_poller"]),
        ("all", ["http", "forwarder-0", "health_poller"]),
    ],
)
def test_each_role_runs_its_share_of_the_instance(
    bundle: Bundle, role: str, expected: list[str]
) -> None:
    names = [child.name for child in children_for(bundle, role)]
    assert names == expected


def test_the_roles_together_run_exactly_what_all_runs(bundle: Bundle) -> None:
    parts = [c.name for role in ("http", "workers") for c in children_for(bundle, role)]
    assert sorted(parts) == sorted(c.name for c in children_for(bundle, "all"))


def test_two_supervisors_of_one_instance_have_distinct_unit_names() -> None:
    names = {unit_name("app1", role) for role in ROLES}
    assert names == {"app1", "app1.http", "app1.workers"}
