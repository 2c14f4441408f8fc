"""The submitted compose is docker-compose.yml with the pushed image and no build step."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import deployment, submission
from stack.compose import ComposeError

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "docker.io/someone/rinha-functions:1.0"
APP_SERVICES = ("app1", "app2", "worker1", "worker2")


def _development() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_it_differs_from_the_development_compose_by_the_image_and_build_only() -> None:
    submitted = yaml.safe_load(
        submission.submitted_compose((ROOT / "docker-compose.yml").read_text(), IMAGE)
    )
    expected = copy.deepcopy(_development())
    for section in (expected["x-app"], *(expected["services"][n] for n in APP_SERVICES)):
        section["image"] = IMAGE
        del section["build"]
    assert submitted == expected


def test_no_service_of_the_submission_builds() -> None:
    submitted = yaml.safe_load(
        submission.submitted_compose((ROOT / "docker-compose.yml").read_text(), IMAGE)
    )
    assert [n for n, s in submitted["services"].items() if "build" in s] == []
    assert {submitted["services"][n]["image"] for n in APP_SERVICES} == {IMAGE}


def test_the_folder_holds_the_compose_and_the_nginx_config_it_mounts(tmp_path: Path) -> None:
    status = deployment.main(["submission", IMAGE, str(tmp_path / "entry")])
    assert status == 0
    assert (tmp_path / "entry" / "deploy" / "nginx.conf").read_bytes() == (
        ROOT / "deploy" / "nginx.conf"
    ).read_bytes()
    compose = yaml.safe_load((tmp_path / "entry" / "docker-compose.yml").read_text())
    mounted = compose["services"]["nginx"]["volumes"][0].split(":")[0]
    assert (tmp_path / "entry" / mounted).is_file()


@pytest.mark.parametrize("image", ["rinha-functions:latest", "Docker.io/X/y", "a b/c"])
def test_an_image_that_cannot_be_pulled_by_name_is_refused(image: str) -> None:
    with pytest.raises(ComposeError, match="expected a pushed image reference"):
        submission.submitted_compose((ROOT / "docker-compose.yml").read_text(), image)


def test_a_compose_without_the_app_image_variable_is_refused() -> None:
    text = (ROOT / "docker-compose.yml").read_text().replace("${APP_IMAGE:-", "${IMAGE:-")
    with pytest.raises(ComposeError, match=r"found 0 and 1"):
        submission.submitted_compose(text, IMAGE)
