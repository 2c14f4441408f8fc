"""docker-compose.yml follows the contest's rules and runs what the local stack runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack import compose, memcached, postgres
from stack.services import (
    APP_INSTANCES,
    WORKER_SERVICES,
    Layout,
    app_argv,
    app_env,
    plan,
    worker_argv,
)
from stack.settings import StackSettings

ROOT = Path(__file__).resolve().parents[2]
_MAX_CPUS = 1.5
_MAX_MEMORY_BYTES = 350 * 1024**2


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return compose.load(ROOT / "docker-compose.yml")


def test_nginx_publishes_port_9999(spec: dict[str, Any]) -> None:
    ports = [str(port) for port in spec["services"]["nginx"]["ports"]]
    assert ports == ["9999:9999"]


def test_at_least_two_app_instances_built_from_the_dockerfile(spec: dict[str, Any]) -> None:
    apps = [name for name in spec["services"] if name.startswith("app")]
    assert len(apps) >= 2
    for name in apps:
        assert spec["services"][name]["build"]["context"] == "."


def test_the_app_image_is_named_by_app_image(spec: dict[str, Any]) -> None:
    # A submission sets APP_IMAGE to a pushed image and drops `build` (README, "Deploying").
    for name in (*APP_INSTANCES, *WORKER_SERVICES):
        assert spec["services"][name]["image"] == "${APP_IMAGE:-rinha-functions:latest}"


def test_nginx_waits_for_both_http_containers_to_be_healthy(spec: dict[str, Any]) -> None:
    depends = spec["services"]["nginx"]["depends_on"]
    assert {name: depends[name]["condition"] for name in APP_INSTANCES} == {
        name: "service_healthy" for name in APP_INSTANCES
    }
    for name in APP_INSTANCES:
        socket = f"/run/app/{name}.sock"
        assert spec["services"][name]["healthcheck"]["test"] == ["CMD", "test", "-S", socket]


def test_every_app_container_waits_for_a_healthy_postgres(spec: dict[str, Any]) -> None:
    assert "healthcheck" in spec["services"]["postgres"]
    for name in (*APP_INSTANCES, *WORKER_SERVICES):
        depends = spec["services"][name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert "healthcheck" in spec["services"][name], name


def test_the_fees_default_to_the_finals(spec: dict[str, Any]) -> None:
    env = _interpolated(spec["services"]["app1"]["environment"])
    fees = (env["APP__PROCESSORS__DEFAULT__FEE"], env["APP__PROCESSORS__FALLBACK__FEE"])
    assert fees == ("0.07", "0.10")


def test_networks_are_a_bridge_and_the_external_payment_processor(spec: dict[str, Any]) -> None:
    assert spec["networks"]["backend"]["driver"] == "bridge"
    assert spec["networks"]["payment-processor"]["external"] is True
    for name in APP_INSTANCES:
        assert set(spec["services"][name]["networks"]) == {"backend", "payment-processor"}


def test_no_service_is_privileged_or_replicated(spec: dict[str, Any]) -> None:
    for name, service in spec["services"].items():
        assert not service.get("privileged"), name
        assert "replicas" not in (service.get("deploy") or {}), name
        assert service.get("network_mode") != "host", name


def test_every_service_has_limits_within_the_contest_budget(spec: dict[str, Any]) -> None:
    limits = compose.service_limits(spec)
    assert set(limits) == set(spec["services"])
    assert sum(limit.cpus for limit in limits.values()) <= _MAX_CPUS + 1e-9
    assert sum(limit.memory_bytes for limit in limits.values()) <= _MAX_MEMORY_BYTES


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users, "the Dockerfile has no USER line"
    assert users[-1] not in ("root", "0")


def test_app_containers_run_the_local_stacks_command(spec: dict[str, Any]) -> None:
    local = {service.name: service.argv for service in plan(StackSettings(dir=Path("/s")))}
    for name in APP_INSTANCES:
        assert compose.command(spec, name) == app_argv(name)
        assert local[name][1:] == app_argv(name)[1:]
    for name, instance in WORKER_SERVICES.items():
        assert compose.command(spec, name) == worker_argv(instance)
        assert local[name][1:] == worker_argv(instance)[1:]


def test_each_instance_has_an_http_and_a_workers_container(spec: dict[str, Any]) -> None:
    # The HTTP server must not share a CPU quota with the forwarder (see docker-compose.yml).
    commands = [compose.command(spec, name) for name in spec["services"]]
    for instance in APP_INSTANCES:
        roles = [c[c.index("--role") + 1] for c in commands if instance in c and "--role" in c]
        assert sorted(roles) == ["http", "workers"], instance


def test_app_containers_get_every_variable_the_local_stack_sets(spec: dict[str, Any]) -> None:
    local = app_env(Layout(StackSettings(dir=Path("/s"))), "app1")
    for name in (*APP_INSTANCES, *WORKER_SERVICES):
        assert set(spec["services"][name]["environment"]) >= set(local)


def test_processor_urls_are_the_contests(spec: dict[str, Any]) -> None:
    env = spec["services"]["app1"]["environment"]
    assert env["PAYMENT_PROCESSOR_URL_DEFAULT"] == "http://payment-processor-default:8080"
    assert env["PAYMENT_PROCESSOR_URL_FALLBACK"] == "http://payment-processor-fallback:8080"


def test_postgres_runs_with_the_local_stacks_tuning(spec: dict[str, Any]) -> None:
    assert compose.command(spec, "postgres") == ["postgres", *postgres.settings_flags()]
    assert postgres.SETTINGS["synchronous_commit"] == "on"


def test_memcached_runs_with_the_local_stacks_flags(spec: dict[str, Any]) -> None:
    assert compose.command(spec, "memcached") == ["memcached", *memcached.FLAGS]


def test_nginx_mounts_the_config_the_local_stack_renders(spec: dict[str, Any]) -> None:
    volumes = spec["services"]["nginx"]["volumes"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in volumes


def test_the_sockets_and_the_queue_are_shared_volumes(spec: dict[str, Any]) -> None:
    nginx_volumes = {v.split(":")[0] for v in spec["services"]["nginx"]["volumes"]}
    for name in (*APP_INSTANCES, *WORKER_SERVICES):
        volumes = {v.split(":")[0]: v.split(":")[1] for v in spec["services"][name]["volumes"]}
        assert volumes["sockets"] == "/run/app"
        assert volumes["queue"] == spec["services"][name]["environment"]["APP__QUEUE__DIR"]
    assert "sockets" in nginx_volumes


def test_a_service_without_limits_is_refused() -> None:
    broken = yaml.safe_load("services: {app1: {image: x, deploy: {resources: {}}}}")
    with pytest.raises(compose.ComposeError, match=r"services\.app1\.deploy\.resources\.limits"):
        compose.service_limits(broken)


def _interpolated(environment: dict[str, str]) -> dict[str, str]:
    """Compose's ``${NAME:-default}`` with no such variable set: the default."""
    pattern = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")
    return {key: pattern.sub(r"\1", str(value)) for key, value in environment.items()}


@pytest.mark.parametrize("instance", APP_INSTANCES)
def test_app_containers_environment_is_a_valid_runtime_config(
    spec: dict[str, Any], instance: str
) -> None:
    from runtime.bundle import load_bundle

    environment = _interpolated(spec["services"][instance]["environment"])
    bundle = load_bundle(
        ROOT / "config" / "app.yaml",
        environ=environment,
        instance=instance,
        manifest_path=ROOT / "functions.yaml",
    )
    assert bundle.runtime.bind == f"unix:/run/app/{instance}.sock"
    assert bundle.runtime.postgres.host == "postgres"
    assert bundle.config.processors["default"].url == "http://payment-processor-default:8080"


def test_the_image_carries_every_package_the_bundle_imports() -> None:
    copied = set(re.findall(r"^COPY (?!--from)(\S+)", (ROOT / "Dockerfile").read_text(), re.M))
    imported = set()
    for source in [*ROOT.glob("functions/*.py"), *ROOT.glob("payments/*.py")]:
        imported |= set(re.findall(r"^(?:from|import) (\w+)", source.read_text(), re.M))
    local_packages = {name for name in imported if (ROOT / name / "__init__.py").exists()}
    assert local_packages, "expected the bundle to import the project's own packages"
    for package in sorted(local_packages):
        assert f"{package}/" in copied, f"Dockerfile does not COPY {package}/"
    for needed in ("functions.yaml", "migrations/", "config/"):
        assert needed in copied


def test_the_metrics_folder_is_shared_by_both_instances(spec: dict[str, Any]) -> None:
    for name in ("app1", "app2"):
        service = spec["services"][name]
        folder = service["environment"]["APP__METRICS_DIR"]
        assert any(volume.endswith(f":{folder}") for volume in service["volumes"])
