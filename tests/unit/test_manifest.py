"""The manifest loader: each broken bundle in tests/bundles/ fails with its fault and message."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import (
    HandlerNotFound,
    HandlerShapeError,
    ImportModuleError,
    ManifestError,
    QueueWiringError,
    SettingsError,
    UserCodeSyntaxError,
)
from runtime.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "tests" / "bundles"

# (manifest relative to tests/bundles, exact exception class, message after "<manifest path>: ")
BROKEN = [
    (
        "syntax_error/functions.yaml",
        UserCodeSyntaxError,
        "function 'broken': syntax error in 'syntax_error_fn.py' line 5: '(' was never closed",
    ),
    (
        "missing_file/functions.yaml",
        HandlerNotFound,
        "function 'ghost': handler file 'missing_file_fn.py' does not exist",
    ),
    (
        "missing_name/functions.yaml",
        HandlerNotFound,
        "function 'hello': 'missing_name_fn.py' defines no name 'Hello'",
    ),
    (
        "import_error/functions.yaml",
        ImportModuleError,
        "function 'needs_dependency': importing 'import_error_fn.py' failed: "
        "ModuleNotFoundError: No module named 'surely_not_installed_dependency'",
    ),
    (
        "wrong_shape/no_on_get.yaml",
        HandlerShapeError,
        "function 'reader': http handler 'PostOnly' must define a method 'on_get'",
    ),
    (
        "wrong_shape/no_handle.yaml",
        HandlerShapeError,
        "function 'consumer': background handler 'NoHandle' must define a method 'handle'",
    ),
    (
        "wrong_shape/two_arg_constructor.yaml",
        HandlerShapeError,
        "function 'greedy': 'TwoArguments' must take one constructor argument, "
        "the function context; it takes 2",
    ),
    (
        "not_a_class/functions.yaml",
        HandlerShapeError,
        "function 'hello': 'hello' in 'not_a_class_fn.py' must be a class, found function",
    ),
    (
        "duplicate_route/functions.yaml",
        ManifestError,
        "function 'second': route POST /things/ is already served by function 'first'",
    ),
    (
        "duplicate_name/functions.yaml",
        ManifestError,
        "function 'things' is declared twice",
    ),
    (
        "unknown_key/functions.yaml",
        ManifestError,
        "function 'hello': unknown key 'timeout_s' for kind http; "
        "allowed: handler, kind, methods, name, queue, route, settings",
    ),
    (
        "wrong_type/functions.yaml",
        ManifestError,
        "function 'worker': 'concurrency' must be a whole number 1 to 4096, found 'many'",
    ),
    (
        "bad_kind/functions.yaml",
        ManifestError,
        "function 'hello': 'kind' must be one of http, background, schedule, found 'lambda'",
    ),
    (
        "not_a_list/functions.yaml",
        ManifestError,
        "'functions' must be a non-empty list of entries",
    ),
    (
        "queue_typo/functions.yaml",
        QueueWiringError,
        "function 'intake': queue 'jobz' is not declared under 'queues' (declared: jobs)",
    ),
    (
        "no_consumer/functions.yaml",
        QueueWiringError,
        "queue 'jobs' is put to by function 'intake' but no background function consumes it: "
        "its items would wait forever; declare a background function with 'queue: jobs'",
    ),
    (
        "no_producer/functions.yaml",
        QueueWiringError,
        "queue 'jobs' is consumed by function 'worker' but no function puts to it; give the "
        "producing http function 'queue: jobs'",
    ),
    (
        "two_consumers/functions.yaml",
        QueueWiringError,
        "queue 'jobs' is consumed by functions 'worker', 'auditor'; a queue has one consuming "
        "function (use 'processes' or 'concurrency' for more hands)",
    ),
    (
        "bad_setting_type/functions.yaml",
        SettingsError,
        "function 'health': settings.cache_s: expected a number, found str 'soon'",
    ),
    (
        "unknown_setting/functions.yaml",
        SettingsError,
        "function 'health': settings.cache_secs: unknown key; expected one of cache_s",
    ),
    (
        "settings_without_schema/functions.yaml",
        SettingsError,
        "function 'hello': 'settings' given, but 'Hello' declares no Settings dataclass to "
        "hold them; add one or remove 'settings'",
    ),
    (
        "setting_without_default/functions.yaml",
        SettingsError,
        "function 'hello': Hello.Settings.greeting needs a default: settings tune a function; "
        "what each deployment must give belongs in the bundle's config",
    ),
    (
        "bad_record/functions.yaml",
        HandlerShapeError,
        "queue 'jobs': record: 'Job' must define encode(self) -> bytes and a classmethod "
        "decode(data: bytes), the one writer and the one reader of its records",
    ),
    (
        "config_env_typo/functions.yaml",
        ManifestError,
        "config.env: UPSTREAM_URL names 'upstream.urll', which is not a key of ShopConfig",
    ),
    (
        "config_clash/functions.yaml",
        ManifestError,
        "config.schema: ShopConfig.server has the name of one of the runtime's own sections "
        "(env_file, instance, logging, manifest, memcached, metrics_dir, migrations, postgres, "
        "queue, server, state_dir, functions); rename it",
    ),
]


@pytest.mark.parametrize(
    ("manifest", "fault", "message"),
    BROKEN,
    ids=[manifest.removesuffix("/functions.yaml").replace(".yaml", "") for manifest, *_ in BROKEN],
)
def test_broken_bundle_raises_its_own_fault_naming_file_entry_and_problem(
    manifest: str, fault: type[Exception], message: str
) -> None:
    path = BUNDLES / manifest
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert type(caught.value) is fault
    assert str(caught.value) == f"{path}: {message}"


def test_a_broken_bundle_fails_the_same_way_when_loaded_again() -> None:
    # A failed import must not leave a half-initialised module behind for the next attempt.
    path = BUNDLES / "import_error" / "functions.yaml"
    for _ in range(2):
        with pytest.raises(ImportModuleError, match="surely_not_installed_dependency"):
            load_manifest(path)


def test_invalid_yaml_names_the_manifest_and_the_line() -> None:
    path = BUNDLES / "bad_yaml" / "functions.yaml"
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert type(caught.value) is ManifestError
    assert str(caught.value).startswith(f"{path}: not valid YAML: ")
    assert "line 4" in str(caught.value)


def test_a_missing_manifest_says_it_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "functions.yaml"
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value) == f"{path}: cannot read the manifest (No such file or directory)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]\n", "expected a mapping with a 'functions' list"),
        (
            "functions: []\nextra: 1\n",
            "unknown key 'extra'; allowed: config, functions, metrics, queues",
        ),
        ("functions: []\n", "'functions' must be a non-empty list of entries"),
        ("functions: [hello]\n", "functions[0]: expected a mapping, found str"),
        (
            "functions:\n  - kind: http\n",
            "functions[0]: 'name' must be lower_snake_case text, found None",
        ),
        (
            "functions:\n  - {name: Hello, kind: http}\n",
            "functions[0]: 'name' must be lower_snake_case text, found 'Hello'",
        ),
        (
            "functions:\n  - {name: hi, kind: schedule, handler: x.py}\n",
            "function 'hi': 'handler' must look like 'functions/file.py:ClassName', found 'x.py'",
        ),
        (
            "functions:\n  - {name: hi, kind: http, handler: 'x.py:X', route: hi,"
            " methods: [GET]}\n",
            "function 'hi': 'route' must be a path starting with '/', found 'hi'",
        ),
        (
            "functions:\n  - {name: hi, kind: http, handler: 'x.py:X', route: /hi,"
            " methods: [FETCH]}\n",
            "function 'hi': method 'FETCH' is not one of "
            "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
        ),
        (
            "functions:\n  - {name: hi, kind: background, handler: 'x.py:X'}\n",
            "function 'hi': 'queue' must name the queue it consumes, found None",
        ),
        (
            "functions:\n  - {name: hi, kind: background, handler: 'x.py:X', queue: q,"
            " processes: 17}\n",
            "function 'hi': 'processes' must be a whole number 1 to 16, found 17",
        ),
        (
            "functions:\n  - {name: hi, kind: background, handler: 'x.py:X', queue: q,"
            " consumers: two}\n",
            "function 'hi': 'consumers' must be one of each, one, found 'two'",
        ),
        (
            "functions:\n  - {name: hi, kind: schedule, handler: 'x.py:X', every_s: 0}\n",
            "function 'hi': 'every_s' must be a number of seconds > 0, found 0",
        ),
        (
            "functions:\n  - {name: hi, kind: schedule, handler: 'x.py:X', every_s: 1,"
            " settings: [a]}\n",
            "function 'hi': 'settings' must be a mapping",
        ),
        (
            "functions:\n  - {name: hi, kind: schedule, handler: 'x.txt:X', every_s: 1}\n",
            "function 'hi': handler file must be a .py file, found 'x.txt'",
        ),
    ],
)
def test_malformed_entry_is_refused_before_any_code_is_imported(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "functions.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    assert str(caught.value) == f"{path}: {message}"


def test_valid_bundle_loads_every_kind_with_its_fields() -> None:
    manifest = load_manifest(BUNDLES / "valid" / "functions.yaml")

    assert [spec.name for spec in manifest.functions] == ["hello", "worker", "tick"]
    hello, worker, tick = manifest.functions
    assert (hello.kind, hello.route, hello.methods) == ("http", "/hello", ("GET", "POST"))
    assert hello.settings == hello.handler.Settings(greeting="hi")
    assert worker.settings is None  # it declares no Settings
    assert hello.handler.__name__ == "Hello"
    assert (worker.kind, worker.queue, worker.concurrency, worker.processes) == (
        "background",
        "jobs",
        8,
        1,
    )
    assert (tick.kind, tick.every_s) == ("schedule", 2.0)
    assert manifest.of_kind("http") == [hello]
    assert set(manifest.queues) == {"jobs"}
    assert manifest.queues["jobs"].record is None  # JSON values


def test_the_projects_own_manifest_loads() -> None:
    manifest = load_manifest(ROOT / "functions.yaml")

    names = {spec.name: spec for spec in manifest.functions}
    assert {"intake", "summary", "purge", "health", "metrics", "forwarder"} <= set(names)
    assert names["intake"].route == "/payments"
    assert names["intake"].queue == names["forwarder"].queue == "payments"
    assert names["forwarder"].kind == "background"
    assert manifest.queues["payments"].record.__name__ == "Payment"
    assert manifest.config_schema.__name__ == "PaymentsConfig"
    assert manifest.metrics.__name__ == "PaymentMetrics"
