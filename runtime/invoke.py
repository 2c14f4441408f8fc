"""``python -m runtime invoke NAME``: one function, called in-process, no Nginx or bjoern.

An HTTP function answers through the Falcon app ``serve`` runs (the whole bundle's, so the
middleware and error contract are the real ones); a background function is handed one record
through ``prepare`` and ``handle`` (``runtime.testing.deliver``: a queue of its own, the
bundle's queues untouched); a scheduled function runs once. The connections are the config's
real ones, so ``invoke summary`` reads the PostgreSQL of a running stack; one that does not
answer is named in one line. The exit status is 0 for a 2xx or a clean run, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import falcon
import falcon.testing

from runtime import testing
from runtime.bundle import Bundle
from runtime.db import DatabaseUnavailable
from runtime.deps import Deps
from runtime.errors import RuntimeStartError
from runtime.records import decoder


class InvokeError(RuntimeStartError):
    """The invocation cannot be made as asked; the message says what to change."""


@dataclass
class HttpCall:
    """One request, as the command line describes it."""

    method: str | None = None
    path: str | None = None
    query: str = ""
    headers: tuple[str, ...] = ()
    body: str | None = None


class _Watched:
    """A connection whose failures to connect are noted, then raised as they were."""

    def __init__(self, target: Any, label: str, seen: list[str]) -> None:
        self._target = target
        self._label = label
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return value(*args, **kwargs)
            except Exception as exc:
                unreachable = isinstance(exc, DatabaseUnavailable | OSError)
                if unreachable or type(exc).__module__.startswith("pymemcache"):
                    self._seen.append(f"{self._label} did not answer: {exc}")
                raise

        return call


def watched_deps(bundle: Bundle, seen: list[str], *, offline: bool = False) -> Deps:
    """The bundle's real connections (``offline``: ones that refuse to be used), each failure
    to reach one noted in ``seen``."""
    if offline:
        return bundle.deps(offline=True)
    real = bundle.deps()
    config = bundle.runtime
    return bundle.deps(
        database=_Watched(
            real.database, f"PostgreSQL at {config.postgres.host}:{config.postgres.port}", seen
        ),
        memcache=_Watched(real.memcache, f"Memcached at {config.memcached.server}", seen),
    )


def read_text_argument(value: str, what: str) -> str:
    """``@file`` (its content), ``-`` (standard input) or the text itself."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as exc:
            raise InvokeError(f"{what} {value}: cannot read it ({exc.strerror})") from None
    return value


def invoke_http(
    bundle: Bundle, name: str, call: HttpCall, deps: Deps, out: TextIO = sys.stdout
) -> int:
    """Send one request to function ``name`` through the bundle's app; print the answer."""
    spec = bundle.manifest.function(name)
    assert spec.route is not None
    method = (call.method or spec.methods[0]).upper()
    if method not in spec.methods:
        raise InvokeError(f"--method {method}: '{name}' answers {', '.join(spec.methods)} only")
    path = call.path or spec.route
    if "{" in path:
        raise InvokeError(
            f"'{name}' serves {spec.route}: give --path with a value for each parameter"
        )
    app = testing.create_app(bundle, deps)
    _check_routed_to(app, bundle, name, path)
    headers: dict[str, str] = {}
    for header in call.headers:
        key, sep, value = header.partition(":")
        if not sep or not key.strip():
            raise InvokeError(f"--header {header!r}: expected NAME:VALUE")
        headers[key.strip()] = value.strip()
    body = None
    if call.body is not None:
        body = read_text_argument(call.body, "--body")
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
    result = falcon.testing.TestClient(app).simulate_request(
        method, path, query_string=call.query.lstrip("?") or None, headers=headers, body=body
    )
    print(f"HTTP/1.1 {result.status}", file=out)
    for key, value in result.headers.items():
        print(f"{key}: {value}", file=out)
    print("", file=out)
    if result.text:
        print(result.text, file=out)
    return 0 if 200 <= result.status_code < 300 else 1


def _check_routed_to(app: falcon.App, bundle: Bundle, name: str, path: str) -> None:
    found = app._router.find(path)  # the router the app serves with; no public lookup exists
    if found is None:
        raise InvokeError(f"--path {path}: no function serves it ('{name}' serves its route)")
    template = found[3]
    spec = bundle.manifest.function(name)
    if template != spec.route.rstrip("/") and template != spec.route:  # type: ignore[union-attr]
        other = next(
            (s.name for s in bundle.manifest.of_kind("http") if s.route == template), template
        )
        raise InvokeError(f"--path {path} is served by '{other}', not '{name}'")


def invoke_background(
    bundle: Bundle,
    name: str,
    message: str,
    deps_args: dict[str, Any],
    *,
    timeout_s: float,
    out: TextIO = sys.stdout,
) -> int:
    """Hand function ``name`` one record through ``prepare`` and ``handle``; say whether it
    was acknowledged."""
    spec = bundle.manifest.function(name)
    assert spec.queue is not None
    data = read_text_argument(message, "--message").strip().encode()
    queue = bundle.manifest.queues[spec.queue]
    try:
        record = decoder(queue)(data)
    except Exception as exc:
        kind = queue.record_ref or "a JSON value"
        raise InvokeError(
            f"--message: not a record of queue '{spec.queue}' ({kind}): {exc}"
        ) from None
    started = time.monotonic()
    result = testing.deliver(bundle, name, record, timeout_s=timeout_s, **deps_args)
    took = time.monotonic() - started
    if result.settled:
        print(f"{name}: 1 record handled and acknowledged in {took:.2f} s", file=out)
        return 0
    print(
        f"{name}: the record was not acknowledged within {timeout_s:g} s (handle raised or "
        "is still waiting: its log lines above say which)",
        file=out,
    )
    return 1


def invoke_schedule(bundle: Bundle, name: str, deps: Deps, out: TextIO = sys.stdout) -> int:
    """Run scheduled function ``name`` once; print what ``run()`` returned."""
    spec = bundle.manifest.function(name)
    handler = bundle.construct(spec, deps)
    started = time.monotonic()
    try:
        returned = handler.run()
    except Exception as exc:
        print(f"{name}: run() raised {type(exc).__name__}: {exc}", file=out)
        return 1
    shown = json.dumps(returned, default=repr) if returned is not None else "nothing"
    print(f"{name}: ran once in {time.monotonic() - started:.3f} s, returned {shown}", file=out)
    return 0


def run(
    bundle: Bundle,
    name: str,
    *,
    call: HttpCall,
    message: str | None,
    offline: bool,
    timeout_s: float,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Invoke ``name`` by its kind; returns the exit status."""
    try:
        spec = bundle.manifest.function(name)
    except KeyError:
        names = ", ".join(s.name for s in bundle.manifest.functions)
        raise InvokeError(
            f"no function '{name}' in {bundle.manifest.path}; there are: {names}"
        ) from None
    seen: list[str] = []
    deps = watched_deps(bundle, seen, offline=offline)
    actions: dict[str, Callable[[], int]] = {
        "http": lambda: invoke_http(bundle, name, call, deps, out),
        "schedule": lambda: invoke_schedule(bundle, name, deps, out),
        "background": lambda: invoke_background(
            bundle,
            name,
            _required(message, name),
            {"database": deps.database, "memcache": deps.memcache},
            timeout_s=timeout_s,
            out=out,
        ),
    }
    if spec.kind != "background" and message is not None:
        raise InvokeError(f"--message is for background functions; '{name}' is {spec.kind}")
    try:
        status = actions[spec.kind]()
    finally:
        deps.close()
    for line in dict.fromkeys(seen):
        print(f"error: {line}", file=err)
    return 1 if seen and status == 0 else status


def _required(message: str | None, name: str) -> str:
    if message is None:
        raise InvokeError(
            f"'{name}' is a background function: give --message @file, - or the record as JSON"
        )
    return message
