"""Build and drive a bundle's functions in-process, the way the runtime does: for tests.

Nothing here is a second implementation: an HTTP function is served by the Falcon app the
runtime builds, a record reaches a background function through the real journal, runner,
``prepare`` and ``handle``, and a scheduled function is built as the runtime builds it::

    from falcon.testing import TestClient
    from runtime import testing

    bundle = testing.bundle("functions.yaml", config={"queue": {"dir": str(tmp_path)}})
    # or the project's own config/app.yaml, with every folder under tmp_path:
    bundle = testing.isolated_bundle("functions.yaml", tmp_path)
    client = TestClient(testing.create_app(bundle, database=fake_db))
    client.simulate_post("/jobs", json={...})

    result = testing.deliver(bundle, "worker", Job(...), Job(...), database=db)
    assert result.settled == [0, 1]

    testing.run_once(bundle, "tick", memcache=fake_cache)

Connections come from the bundle's config unless given (``database=``, ``memcache=``,
``clock=``: anything a ``Deps`` takes).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon
import yaml

from runtime.app import create_app as _create_app
from runtime.bundle import Bundle, bind, load_bundle
from runtime.config import read_config, runtime_config
from runtime.deps import Deps
from runtime.manifest import Manifest
from runtime.queue import Item, QueueProducer
from runtime.records import encoder
from runtime.stopping import Stopping
from runtime.workers import BackgroundRunner

_DELIVER_TIMEOUT_S = 10.0


def bundle(
    manifest: str | Path,
    *,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Bundle:
    """Load the bundle at ``manifest`` with ``config`` as its config file's content (only
    ``environ``'s ``APP__*`` over it; the process's environment is not read)."""
    return load_bundle(
        environ=environ or {}, manifest_path=manifest, data=dict(config or {"instance": "test1"})
    )


def isolated_bundle(
    manifest: str | Path,
    folder: str | Path,
    *,
    config_file: str | Path | None = None,
    config: Mapping[str, Any] | None = None,
) -> Bundle:
    """The bundle at ``manifest`` with its own config file (``config/app.yaml`` beside the
    manifest by default; ``config`` over it), every folder it writes moved under ``folder``
    and quick queue polls: a test's copy of the project as it is configured."""
    manifest = Path(manifest)
    path = Path(config_file) if config_file else manifest.parent / "config" / "app.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = dict(yaml.safe_load(path.read_text()) or {})
    folder = Path(folder)
    queue = {
        **(data.get("queue") or {}),
        "dir": str(folder / "queue"),
        "poll_interval_ms": 1,
        "commit_interval_ms": 5,
    }
    data.update(
        instance="test1",
        state_dir=str(folder / "state"),
        metrics_dir=str(folder / "metrics"),
        queue=queue,
    )
    data.pop("manifest", None)
    return bundle(manifest, config={**data, **(config or {})})


def deps(bundle: Bundle, **given: Any) -> Deps:
    """The deps the runtime would give the bundle's functions, with ``given`` stand-ins."""
    return bundle.deps(**given)


def create_app(bundle: Bundle, deps: Deps | None = None, **given: Any) -> falcon.App:
    """The Falcon app ``serve`` runs, serving every http function of ``bundle``."""
    return _create_app(bundle, deps or bundle.deps(**given))


@dataclass
class Delivered:
    """What ``deliver`` saw: the index of each record acknowledged, in the order they were."""

    records: int
    settled: list[int] = field(default_factory=list)

    @property
    def unsettled(self) -> list[int]:
        """The records left unacknowledged (still failing, or waiting, at the timeout)."""
        done = set(self.settled)
        return [index for index in range(self.records) if index not in done]


def deliver(
    bundle: Bundle,
    name: str,
    *records: Any,
    timeout_s: float = _DELIVER_TIMEOUT_S,
    **given: Any,
) -> Delivered:
    """Put ``records`` on background function ``name``'s queue and run it until each is
    acknowledged, or ``timeout_s`` passes.

    The queue is a fresh journal in a folder of its own (the bundle's queues are untouched),
    written by the queue's own record type and read by the runtime's own runner: ``prepare``
    sees the batch, ``handle`` each record, and a deferred acknowledgement counts once the
    function calls it. The function is built, started and stopped as in a worker process.
    """
    spec = bundle.manifest.function(name)
    if spec.kind != "background" or spec.queue is None:
        raise ValueError(f"function '{name}' is a {spec.kind} function, not a background one")
    folder = Path(tempfile.mkdtemp(prefix="runtime-deliver-"))
    try:
        runtime = dataclasses.replace(
            bundle.runtime, queue=dataclasses.replace(bundle.runtime.queue, dir=str(folder))
        )
        local = dataclasses.replace(bundle, runtime=runtime)
        run_deps = local.deps(**given)
        encode = encoder(run_deps.queue_spec(spec.queue))
        producer = QueueProducer(run_deps.queue_dir(spec.queue), runtime.instance, 1 << 30)
        starts = {}
        offset = 0
        for index, record in enumerate(records):
            data = encode(record)
            producer.put(data)
            starts[offset] = index
            offset += len(data) + 1
        producer.close()
        result = Delivered(len(records))
        lock = threading.Lock()

        def settled(item: Item) -> None:
            with lock:
                result.settled.append(starts[item.start.offset])

        stop = Stopping()
        timer = threading.Timer(timeout_s, stop.set)
        timer.start()
        try:
            runner = BackgroundRunner(
                local, spec, run_deps, stop, until_idle=True, on_settled=settled
            )
            runner.run()
        finally:
            timer.cancel()
            run_deps.close()
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_once(bundle: Bundle, name: str, **given: Any) -> Any:
    """Build scheduled function ``name`` and call its ``run()`` once; returns what it returns."""
    spec = bundle.manifest.function(name)
    if spec.kind != "schedule":
        raise ValueError(f"function '{name}' is a {spec.kind} function, not a scheduled one")
    return bundle.construct(spec, bundle.deps(**given)).run()


def bundle_from(
    manifest: Manifest,
    *,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Bundle:
    """A bundle of a ``Manifest`` built in code (handlers defined in a test, say), with
    ``config`` as its config file's content."""
    source = read_config(environ=environ or {}, data=dict(config or {"instance": "test1"}))
    return bind(manifest, source, runtime_config(source))
