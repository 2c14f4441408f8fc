"""The typed config: defaults, precedence (environment > file > defaults) and every refusal.

The runtime's own sections (``runtime/config.py``) and the payments bundle's
(``payments/config.py``) are loaded together, as ``serve`` loads them: one file, one
environment, one set of rules.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from payments.config import PaymentsConfig
from runtime.bundle import Bundle, load_bundle
from runtime.config import RuntimeConfig
from runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "functions.yaml"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def load(
    path: Path | None, environ: dict[str, str] | None = None, instance: str | None = None
) -> Bundle:
    return load_bundle(path, environ=environ or {}, instance=instance, manifest_path=MANIFEST)


def refusal(path: Path | None, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, environ)
    return str(caught.value)


def test_defaults_load_when_there_is_no_file_and_no_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no config/app.yaml here to be picked up

    bundle = load(None)

    assert bundle.runtime == RuntimeConfig()
    assert bundle.config == PaymentsConfig()
    assert bundle.runtime.instance == "app1"
    assert bundle.runtime.server.max_body_bytes == 4096
    assert bundle.config.processors["default"].url == "http://127.0.0.1:8001"
    assert bundle.config.limits.max_amount == Decimal("1000000.00")
    assert bundle.runtime.bind == "unix:var/run/app1.sock"


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    bundle = load(write(tmp_path, ""))

    assert (bundle.runtime, bundle.config) == (RuntimeConfig(), PaymentsConfig())


def test_the_projects_own_config_file_is_valid() -> None:
    bundle = load(ROOT / "config" / "app.yaml")

    assert bundle.runtime.manifest == "functions.yaml"
    assert set(bundle.config.processors) == {"default", "fallback"}


def test_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "breaker:\n  failure_threshold: 7\nrouter:\n  slow_ms: 800\n")

    config = load(path).config

    assert config.breaker.failure_threshold == 7
    assert config.router.slow_ms == 800.0
    assert config.breaker.open_s == 30.0  # an untouched key keeps its default
    assert config.router.max_wait_s == 0.0


def test_environment_overrides_file_and_is_parsed_as_a_yaml_scalar(tmp_path: Path) -> None:
    path = write(tmp_path, "breaker:\n  failure_threshold: 7\n  open_s: 12\n")

    config = load(
        path, {"APP__BREAKER__FAILURE_THRESHOLD": "3", "APP__PURGE__ENABLED": "false"}
    ).config

    assert config.breaker.failure_threshold == 3
    assert config.breaker.open_s == 12.0
    assert config.purge.enabled is False


def test_environment_keys_are_case_insensitive_below_the_prefix(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""), {"APP__Router__Slow_MS": "900"}).config

    assert config.router.slow_ms == 900.0


def test_instance_argument_overrides_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "instance: from-file\n")

    assert load(path).runtime.instance == "from-file"
    assert load(path, {"APP__INSTANCE": "from-env"}).runtime.instance == "from-env"
    assert load(path, {"APP__INSTANCE": "from-env"}, instance="app9").runtime.instance == "app9"


def test_app_config_variable_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "instance: chosen\n")

    assert load(None, {"APP_CONFIG": str(path)}).runtime.instance == "chosen"


def test_contest_variables_override_the_processor_urls(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "processors:\n"
        "  default: {url: 'http://file-default:8080', fee: 0.05}\n"
        "  fallback: {url: 'http://file-fallback:8080', fee: 0.15}\n",
    )

    config = load(
        path,
        {
            "PAYMENT_PROCESSOR_URL_DEFAULT": "http://payment-processor-default:8080",
            "PAYMENT_PROCESSOR_URL_FALLBACK": "http://payment-processor-fallback:8080",
        },
    ).config

    assert config.processors["default"].url == "http://payment-processor-default:8080"
    assert config.processors["fallback"].url == "http://payment-processor-fallback:8080"
    assert config.processors["default"].fee == 0.05


def test_an_empty_contest_variable_is_ignored(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""), {"PAYMENT_PROCESSOR_URL_DEFAULT": ""}).config

    assert config.processors["default"].url == "http://127.0.0.1:8001"


def test_an_app_variable_wins_over_the_bundles_own_name_for_the_key(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, ""),
        {
            "PAYMENT_PROCESSOR_URL_DEFAULT": "http://by-contest-name:8080",
            "APP__PROCESSORS__DEFAULT__URL": "http://by-app-name:8080",
        },
    ).config

    assert config.processors["default"].url == "http://by-app-name:8080"


def env_file_config(tmp_path: Path, lines: str) -> Path:
    env_file = tmp_path / "stack.env"
    env_file.write_text(lines)
    return write(tmp_path, f"env_file: {env_file}\npostgres: {{port: 5432}}\n")


def test_the_env_file_sets_keys_over_the_file_as_if_it_were_the_environment(
    tmp_path: Path,
) -> None:
    path = env_file_config(
        tmp_path,
        "# a stack's services\nAPP__POSTGRES__PORT=54320\n\n"
        "PAYMENT_PROCESSOR_URL_DEFAULT=http://from-env-file:8080\n",
    )

    bundle = load(path)

    assert bundle.runtime.postgres.port == 54320
    assert bundle.config.processors["default"].url == "http://from-env-file:8080"
    assert bundle.source.origin("postgres.port") == (
        f"env file {tmp_path / 'stack.env'}: APP__POSTGRES__PORT"
    )


def test_the_real_environment_wins_over_the_env_file(tmp_path: Path) -> None:
    path = env_file_config(
        tmp_path, "APP__POSTGRES__PORT=54320\nAPP__PROCESSORS__DEFAULT__URL=http://file:1\n"
    )

    bundle = load(
        path,
        {"APP__POSTGRES__PORT": "6000", "PAYMENT_PROCESSOR_URL_DEFAULT": "http://real-env:2"},
    )

    assert bundle.runtime.postgres.port == 6000
    assert bundle.config.processors["default"].url == "http://real-env:2"
    assert bundle.source.origin("postgres.port") == "env APP__POSTGRES__PORT"


def test_a_missing_env_file_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, f"env_file: {tmp_path / 'absent.env'}\npostgres: {{port: 5433}}\n")

    assert load(path).runtime.postgres.port == 5433


def test_a_malformed_env_file_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = env_file_config(tmp_path, "APP__POSTGRES__PORT=1\nnot a variable\n")

    assert refusal(path) == (
        f"{tmp_path / 'stack.env'}:2: expected NAME=value, found 'not a variable'"
    )


def test_one_processor_key_from_the_environment_keeps_the_others_defaults(
    tmp_path: Path,
) -> None:
    config = load(write(tmp_path, ""), {"APP__PROCESSORS__DEFAULT__FEE": "0.07"}).config

    assert config.processors["default"].fee == 0.07
    assert config.processors["default"].url == "http://127.0.0.1:8001"
    assert config.processors["fallback"].fee == 0.15


def test_unrelated_environment_variables_are_ignored(tmp_path: Path) -> None:
    environ = {"HOME": "/root", "APP_NAME": "x", "PAYMENT_PROCESSOR_TOKEN": "y"}

    bundle = load(write(tmp_path, ""), environ)

    assert (bundle.runtime, bundle.config) == (RuntimeConfig(), PaymentsConfig())


# --- refusals: each names the key's dotted path and what was expected ---------------------


def test_unknown_key_names_its_dotted_path(tmp_path: Path) -> None:
    path = write(tmp_path, "breaker:\n  failur_threshold: 3\n")

    assert refusal(path) == (
        "breaker.failur_threshold: unknown key; "
        "expected one of failure_threshold, failure_window_s, open_s"
    )


def test_unknown_top_level_key_is_refused(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "servr:\n  bind: x\n"))

    assert message == (
        "servr: unknown key; expected one of breaker, env_file, forwarder, functions, instance, "
        "limits, logging, manifest, memcached, metrics_dir, migrations, postgres, processors, "
        "purge, queue, router, server, state_dir"
    )


def test_unknown_key_from_the_environment_names_its_dotted_path(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, ""), {"APP__QUEUE__SIZE": "3"})

    assert message.startswith("queue.size: unknown key; expected one of commit_interval_ms")


def test_environment_cannot_set_a_key_below_a_scalar(tmp_path: Path) -> None:
    path = write(tmp_path, "instance: app1\n")

    assert refusal(path, {"APP__INSTANCE__NAME": "x"}) == (
        "APP__INSTANCE__NAME: 'instance' is not a section, it cannot hold 'name'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "breaker:\n  failure_threshold: many\n",
            "breaker.failure_threshold: expected a whole number, found str 'many'",
        ),
        (
            "breaker:\n  failure_threshold: 2.5\n",
            "breaker.failure_threshold: expected a whole number, found float 2.5",
        ),
        (
            "breaker:\n  failure_threshold: true\n",
            "breaker.failure_threshold: expected a whole number, found bool True",
        ),
        ("purge:\n  enabled: maybe\n", "purge.enabled: expected true or false, found str 'maybe'"),
        ("router:\n  slow_ms: fast\n", "router.slow_ms: expected a number, found str 'fast'"),
        ("instance: 7\n", "instance: expected a string, found int 7"),
        ("server: 5\n", "server: expected a mapping, found int 5"),
        (
            "limits:\n  max_amount: lots\n",
            "limits.max_amount: expected a decimal number, found str 'lots'",
        ),
        (
            "limits:\n  max_amount: .inf\n",
            "limits.max_amount: expected a decimal number, found float inf",
        ),
        (
            "processors:\n  default: {url: 'http://a:1', fee: cheap}\n",
            "processors.default.fee: expected a number, found str 'cheap'",
        ),
        ("processors:\n  other: {fee: 0.1}\n", "processors.other.url: required but missing"),
        ("processors: [default]\n", "processors: expected a mapping, found list ['default']"),
    ],
)
def test_wrong_type_names_its_dotted_path_and_what_was_found(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refusal(write(tmp_path, text)) == message


def test_wrong_type_from_the_environment_names_its_dotted_path(tmp_path: Path) -> None:
    assert refusal(write(tmp_path, ""), {"APP__POSTGRES__PORT": "five"}) == (
        "postgres.port: expected a whole number, found str 'five'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "server:\n  max_body_bytes: 100\n",
            "server.max_body_bytes: expected 256 to 1048576, found 100",
        ),
        ("postgres:\n  port: 70000\n", "postgres.port: expected 1 to 65535, found 70000"),
        (
            "queue:\n  segment_max_bytes: 1024\n",
            "queue.segment_max_bytes: expected at least 4096, found 1024",
        ),
        ("queue:\n  commit_interval_ms: 0\n", "queue.commit_interval_ms: expected > 0, found 0"),
        (
            "breaker:\n  failure_threshold: 0\n",
            "breaker.failure_threshold: expected at least 1, found 0",
        ),
        ("router:\n  max_wait_s: -1\n", "router.max_wait_s: expected at least 0, found -1.0"),
        (
            "router:\n  health_min_interval_s: 1\n",
            "router.health_min_interval_s: expected at least 5 "
            "(the processors allow one call per 5 s), found 1.0",
        ),
        (
            "limits:\n  max_amount: 0\n",
            "limits.max_amount: expected > 0 and below 1000000000000 "
            "(the payments table's numeric(14, 2)), found 0",
        ),
        (
            "limits:\n  max_amount: 1e26\n",
            "limits.max_amount: expected > 0 and below 1000000000000 "
            "(the payments table's numeric(14, 2)), found 1E+26",
        ),
        (
            "logging:\n  level: loud\n",
            "logging.level: expected one of debug, info, warning, error, found 'loud'",
        ),
        (
            "instance: 'app 1'\n",
            "instance: expected letters, digits, '-' or '_', found 'app 1'",
        ),
        (
            "server:\n  bind: somewhere\n",
            "server.bind: expected 'unix:PATH' or 'HOST:PORT', found 'somewhere'",
        ),
        (
            "memcached:\n  server: 'localhost:0'\n",
            "memcached.server: expected 'unix:PATH' or 'HOST:PORT', found 'localhost:0'",
        ),
        (
            "processors:\n  default: {url: 'ftp://a', fee: 0.05}\n",
            "processors.default.url: expected an http:// URL such as "
            "http://payment-processor-default:8080 (the forwarder's client speaks plain "
            "HTTP/1.1), found 'ftp://a'",
        ),
        (
            "processors:\n  default: {url: 'https://a:443', fee: 0.05}\n",
            "processors.default.url: expected an http:// URL such as "
            "http://payment-processor-default:8080 (the forwarder's client speaks plain "
            "HTTP/1.1), found 'https://a:443'",
        ),
        (
            "processors:\n  default: {url: 'http://a:1', fee: 5}\n",
            "processors.default.fee: expected 0 to 0.99 (a fraction: 0.05 is 5%), found 5.0",
        ),
        (
            "forwarder:\n  request_timeout_s: 8\n  unpin_after_s: 10\n",
            "forwarder.unpin_after_s: expected at least twice forwarder.request_timeout_s",
        ),
        (
            "forwarder:\n  retry_initial_ms: 2000\n  retry_max_ms: 1000\n",
            "forwarder.retry_initial_ms: expected at most forwarder.retry_max_ms",
        ),
        (
            "functions:\n  health: {cache_s: soon}\n",
            "functions.health.cache_s: expected a number, found str 'soon'",
        ),
        (
            "functions:\n  health: {cache: 1}\n",
            "functions.health.cache: unknown key; expected one of cache_s",
        ),
        (
            "functions:\n  forwarder: {max_connections: 0}\n",
            "functions.forwarder.max_connections: expected 1 to 4096, found 0",
        ),
        (
            "functions:\n  helth: {cache_s: 1}\n",
            "functions.helth: no such function in "
            f"{MANIFEST}; expected one of forwarder, health, health_poller, intake, metrics, "
            "purge, summary",
        ),
        (
            "functions:\n  summary: {page: 1}\n",
            "functions.summary: 'Summary' declares no Settings dataclass; this function has "
            "no settings to set",
        ),
    ],
)
def test_out_of_range_value_names_its_dotted_path_and_the_range(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refusal(write(tmp_path, text)) == message


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server: [unclosed\n")

    message = refusal(path)

    assert message.startswith(f"{path}: not valid YAML: ")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "- instance\n- app1\n")

    assert refusal(path) == f"{path}: expected a mapping at the top, found list"


def test_a_missing_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"

    assert refusal(path) == f"{path}: cannot read the config file (No such file or directory)"


@pytest.mark.parametrize(
    "secret", ["postgres:\n  password: s3cret\n", "purge:\n  token: let-me-purge\n"]
)
def test_world_readable_file_holding_a_secret_is_refused_with_a_chmod_hint(
    tmp_path: Path, secret: str
) -> None:
    path = write(tmp_path, secret, mode=0o644)

    assert refusal(path) == (
        f"{path}: holds a password or token but is world-readable; run `chmod o-r {path}`"
        " or pass the secret through the environment"
    )


def test_the_same_secret_file_is_accepted_once_not_world_readable(tmp_path: Path) -> None:
    path = write(tmp_path, "postgres:\n  password: s3cret\npurge:\n  token: t0k\n", mode=0o600)

    bundle = load(path)

    assert bundle.runtime.postgres.password == "s3cret"
    assert bundle.config.purge.token == "t0k"


def test_world_readable_file_without_a_secret_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "postgres:\n  password: ''\n  user: me\n", mode=0o644)

    assert load(path).runtime.postgres.user == "me"


def test_a_secret_from_the_environment_needs_no_file_permissions(tmp_path: Path) -> None:
    path = write(tmp_path, "postgres:\n  user: me\n", mode=0o644)

    config = load(path, {"APP__POSTGRES__PASSWORD": "s3cret"}).runtime

    assert config.postgres.password == "s3cret"


@pytest.mark.parametrize("secret", ["0123", "123456", "true", "null", "1e3"])
def test_a_secret_from_the_environment_is_kept_as_text_whatever_it_looks_like(
    tmp_path: Path, secret: str
) -> None:
    bundle = load(
        write(tmp_path, ""), {"APP__POSTGRES__PASSWORD": secret, "APP__PURGE__TOKEN": secret}
    )

    assert bundle.runtime.postgres.password == secret
    assert bundle.config.purge.token == secret


def test_a_number_from_the_environment_is_still_a_number(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, ""), {"APP__ROUTER__MAX_WAIT_S": "0.5", "APP__LIMITS__MAX_AMOUNT": "500.00"}
    ).config

    assert config.router.max_wait_s == 0.5
    assert config.limits.max_amount == Decimal("500.00")


def test_a_world_readable_file_with_a_secret_in_a_functions_settings_is_refused_too(
    tmp_path: Path,
) -> None:
    # A secret is whatever a schema marks Secret(), whichever schema: the runtime's, the
    # bundle's or a function's settings.
    path = write(tmp_path, "purge:\n  token: let-me-purge\n", mode=0o644)

    assert "holds a password or token but is world-readable" in refusal(path)


def test_a_functions_settings_come_from_its_entry_then_the_file_then_the_environment(
    tmp_path: Path,
) -> None:
    (tmp_path / "empty").mkdir()
    defaults = load(write(tmp_path / "empty", "")).settings
    path = write(tmp_path, "functions:\n  forwarder: {batch_max: 200}\n")

    from_file = load(path).settings
    from_env = load(path, {"APP__FUNCTIONS__FORWARDER__BATCH_MAX": "50"}).settings

    assert defaults["health"].cache_s == 0.5  # functions.yaml's
    assert (defaults["forwarder"].batch_max, defaults["forwarder"].max_connections) == (500, 512)
    assert (from_file["forwarder"].batch_max, from_file["forwarder"].max_connections) == (200, 512)
    assert from_env["forwarder"].batch_max == 50
    assert from_file["summary"] is None  # it declares no settings


def test_the_source_says_where_each_value_came_from(tmp_path: Path) -> None:
    path = write(tmp_path, "router:\n  slow_ms: 800\n")

    source = load(
        path, {"APP__BREAKER__OPEN_S": "9", "PAYMENT_PROCESSOR_URL_DEFAULT": "http://x:1"}
    ).source

    assert source.origin("router.slow_ms") == "file"
    assert source.origin("breaker.open_s") == "env APP__BREAKER__OPEN_S"
    assert source.origin("processors.default.url") == "env PAYMENT_PROCESSOR_URL_DEFAULT"
    assert source.origin("router.max_wait_s") is None  # a default
