"""``python -m runtime new``: a new function, its manifest entry and a test that passes.

The function file follows the project's own shape (a class taking its context, typed
``Settings``, a docstring on why); the entry is added to the manifest's text, so its comments
and layout stay as they are; the test drives the function through ``runtime.testing``. Nothing
is written unless all of it can be: every refusal comes first, and a manifest that would not
load afterwards is put back as it was.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import RuntimeStartError
from runtime.manifest import HTTP_METHODS, KINDS, Manifest, load_manifest

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ROUTE = re.compile(r"^/[A-Za-z0-9_\-./{}]*$")
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


class ScaffoldError(RuntimeStartError):
    """``new`` cannot write what was asked; the message says why and what to do instead."""


@dataclass(frozen=True)
class NewFunction:
    """What ``new`` is asked to write."""

    name: str
    kind: str
    route: str | None = None
    methods: tuple[str, ...] = ()
    queue: str | None = None
    every_s: float | None = None

    @property
    def class_name(self) -> str:
        """``daily_report`` -> ``DailyReport``."""
        return "".join(part.capitalize() for part in self.name.split("_") if part)


@dataclass
class Written:
    """The files ``new`` wrote or changed, for the user to see."""

    created: list[Path] = field(default_factory=list)
    changed: list[Path] = field(default_factory=list)


def new_function(manifest_path: Path, request: NewFunction) -> Written:
    """Write the function(s), their manifest entries and a test; returns what it wrote.

    A background function on a queue nobody puts to yet comes with the HTTP function that
    does (``--route``): a queue needs both ends, and ``check`` refuses one alone.

    Raises:
        ScaffoldError: a name, route, file or queue is taken or wrong (nothing is written).
    """
    manifest = load_manifest(manifest_path)
    root = manifest.root
    folder = _functions_folder(manifest)
    functions = _plan(manifest, request)
    files = {root / folder / f"{fn.name}.py": _function_source(fn) for fn in functions}
    test_dir = root / "tests" / "functions"
    test_path = test_dir / f"test_{request.name}.py"
    files[test_path] = _test_source(functions, folder)
    for path in files:
        if path.exists():
            raise ScaffoldError(f"{path}: exists already; choose another name or remove it")
    original = manifest_path.read_text()
    text = original
    new_queue = request.queue if request.queue and request.queue not in manifest.queues else None
    if new_queue:
        text = _add_queue(text, new_queue)
    text = _add_entries(text, [_entry_yaml(fn, folder) for fn in functions])
    written = Written()
    try:
        for path, source in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source)
            written.created.append(path)
        if (root / "tests" / "__init__.py").exists() and not (test_dir / "__init__.py").exists():
            (test_dir / "__init__.py").write_text("")
            written.created.append(test_dir / "__init__.py")
        manifest_path.write_text(text)
        written.changed.append(manifest_path)
        load_manifest(manifest_path)
    except (RuntimeStartError, OSError) as exc:
        manifest_path.write_text(original)
        for path in written.created:
            path.unlink(missing_ok=True)
        raise ScaffoldError(f"the new function would not load, nothing was kept: {exc}") from exc
    return written


def _plan(manifest: Manifest, request: NewFunction) -> list[NewFunction]:
    """The functions to write (one, or a background function and its producer), after every
    refusal."""
    _check_name(manifest, request.name)
    if request.kind not in KINDS:
        raise ScaffoldError(f"--kind must be one of {', '.join(KINDS)}, found {request.kind!r}")
    if request.kind == "http":
        _check_http(manifest, request)
        if request.queue is not None:
            _check_put_to(manifest, request.queue)
        if request.every_s is not None:
            raise ScaffoldError("--every-s is for --kind schedule")
        return [request]
    if request.kind == "schedule":
        if request.route or request.methods or request.queue:
            raise ScaffoldError("a scheduled function takes --every-s only (no route or queue)")
        if request.every_s is None or request.every_s <= 0:
            raise ScaffoldError("--kind schedule needs --every-s N, N > 0 seconds between runs")
        return [request]
    if request.queue is None:
        raise ScaffoldError("--kind background needs --queue NAME: the queue it consumes")
    if request.every_s is not None:
        raise ScaffoldError("--every-s is for --kind schedule")
    _check_queue_name(request.queue)
    if request.queue in manifest.queues:
        consumer = next(
            (s.name for s in manifest.of_kind("background") if s.queue == request.queue), None
        )
        raise ScaffoldError(
            f"queue '{request.queue}' is consumed by '{consumer}' already, and a queue has "
            "one consumer; name a new queue"
        )
    if not request.route:
        raise ScaffoldError(
            f"queue '{request.queue}' is new and a queue needs both ends: add --route /PATH to "
            f"write the HTTP function that puts to it too ({request.name}_submit, POST)"
        )
    consumer_fn = NewFunction(request.name, "background", queue=request.queue)
    submit = NewFunction(
        f"{request.name}_submit",
        "http",
        route=request.route,
        methods=request.methods or ("POST",),
        queue=request.queue,
    )
    _check_name(manifest, submit.name)
    _check_http(manifest, submit)
    return [consumer_fn, submit]


def _check_name(manifest: Manifest, name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name) or not _NAME.match(name):
        raise ScaffoldError(
            f"{name!r}: a function's name must be a Python identifier in lower_snake_case "
            "(not a keyword): it names the file functions/NAME.py and its class"
        )
    if any(spec.name == name for spec in manifest.functions):
        raise ScaffoldError(f"{manifest.path}: a function named '{name}' exists already")


def _check_http(manifest: Manifest, request: NewFunction) -> None:
    route = request.route
    if not route:
        raise ScaffoldError("--kind http needs --route /PATH (a Falcon route template)")
    if not _ROUTE.match(route) or route.count("{") != route.count("}"):
        raise ScaffoldError(f"--route {route!r}: expected a path such as /version or /items/{{id}}")
    taken = next(
        (s.name for s in manifest.of_kind("http") if _same_route(s.route or "", route)), None
    )
    if taken:
        raise ScaffoldError(f"--route {route}: served by '{taken}' already; choose another path")
    methods = request.methods or ("GET",)
    wrong = [m for m in methods if m not in HTTP_METHODS]
    if wrong:
        raise ScaffoldError(f"--methods: {wrong[0]!r} is not one of {', '.join(HTTP_METHODS)}")


def _check_put_to(manifest: Manifest, queue: str) -> None:
    _check_queue_name(queue)
    if queue not in manifest.queues:
        raise ScaffoldError(
            f"queue '{queue}' does not exist and would have no consumer; write both ends at "
            f"once: `new NAME --kind background --queue {queue} --route ROUTE`"
        )
    record = manifest.queues[queue].record_ref
    if record:
        raise ScaffoldError(
            f"queue '{queue}' carries {record} records, which a template cannot build; write "
            "the function by hand (its file shows how to put one)"
        )


def _check_queue_name(queue: str) -> None:
    if not _NAME.match(queue):
        raise ScaffoldError(f"--queue {queue!r}: a queue's name is lower_snake_case")


def _same_route(a: str, b: str) -> bool:
    """Two templates Falcon would see as one path (``/x/{id}`` and ``/x/{key}``, ``/x/``)."""

    def shape(route: str) -> str:
        return re.sub(r"\{[^}]*\}", "{}", route.rstrip("/") or "/")

    return shape(a) == shape(b)


def _functions_folder(manifest: Manifest) -> str:
    """Where the manifest's handlers live (``functions`` when it cannot tell)."""
    folders = [spec.handler_ref.partition(":")[0].rpartition("/")[0] for spec in manifest.functions]
    folders = [folder for folder in folders if folder]
    return max(set(folders), key=folders.count) if folders else "functions"


# --- the manifest's text ----------------------------------------------------------------------


def _entry_yaml(fn: NewFunction, folder: str) -> str:
    lines = [
        f"  - name: {fn.name}",
        f"    kind: {fn.kind}",
        f"    handler: {folder}/{fn.name}.py:{fn.class_name}",
    ]
    if fn.kind == "http":
        lines += [f"    route: {fn.route}", f"    methods: [{', '.join(fn.methods or ('GET',))}]"]
    if fn.queue:
        lines.append(f"    queue: {fn.queue}")
    if fn.kind == "background":
        lines += ["    concurrency: 16", "    processes: 1"]
    if fn.kind == "schedule":
        lines.append(f"    every_s: {fn.every_s}")
    return "\n".join(lines) + "\n"


def _block_end(lines: list[str], key: str) -> int | None:
    """The index after the last line of top-level ``key``'s block (trailing blanks and
    comments belong to what follows), or ``None`` without such a key."""
    start = next((i for i, line in enumerate(lines) if line.startswith(f"{key}:")), None)
    if start is None:
        return None
    end = start + 1
    last = start
    while end < len(lines):
        line = lines[end]
        if _TOP_KEY.match(line):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            last = end
        end += 1
    return last + 1


def _add_entries(text: str, entries: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    end = _block_end(lines, "functions")
    if end is None:
        raise ScaffoldError("the manifest has no 'functions:' list to add to")
    if lines and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    addition = "".join(f"\n{entry}" for entry in entries)
    return "".join(lines[:end]) + addition + "".join(lines[end:])


def _add_queue(text: str, queue: str) -> str:
    lines = text.splitlines(keepends=True)
    end = _block_end(lines, "queues")
    entry = f"  {queue}: {{}}\n"
    if end is not None:
        if not lines[end - 1].endswith("\n"):
            lines[end - 1] += "\n"
        return "".join(lines[:end]) + entry + "".join(lines[end:])
    start = next(i for i, line in enumerate(lines) if line.startswith("functions:"))
    while start > 0 and lines[start - 1].lstrip().startswith("#"):
        start -= 1  # keep the list's own comment above it
    section = f"queues:\n{entry}\n"
    return "".join(lines[:start]) + section + "".join(lines[start:])


# --- the templates ----------------------------------------------------------------------------


def _sample_path(route: str) -> str:
    return re.sub(r"\{[^}]*\}", "1", route)


def _function_source(fn: NewFunction) -> str:
    if fn.kind == "http":
        return _http_source(fn)
    if fn.kind == "background":
        return _background_source(fn)
    return _schedule_source(fn)


_SETTINGS = '''
    @dataclass(frozen=True)
    class Settings:
        greeting: str = "hello"
        """An example setting: functions.yaml's `settings:`, config/app.yaml's
        `functions.{name}` or APP__FUNCTIONS__{upper}__GREETING change it."""
'''


def _http_source(fn: NewFunction) -> str:
    methods = fn.methods or ("GET",)
    route = fn.route or "/"
    params = ", **params: str" if "{" in route else ""
    body = []
    for method in methods:
        lower = method.lower()
        if fn.queue and method in ("POST", "PUT", "PATCH"):
            body.append(
                f"""
    def on_{lower}(self, req: falcon.Request, resp: falcon.Response{params}) -> None:
        record = req.get_media()
        if not isinstance(record, dict):
            raise falcon.HTTPBadRequest(title="invalid_body", description="expected a JSON object")
        self._queue.put(record)  # durable once it returns: the consumer will see it
        resp.status = falcon.HTTP_202
        resp.media = {{"queued": True}}
"""
            )
        else:
            echo = (
                "{"
                + f'"function": "{fn.name}", "greeting": self._greeting'
                + (', "params": params' if params else "")
                + "}"
            )
            body.append(
                f"""
    def on_{lower}(self, req: falcon.Request, resp: falcon.Response{params}) -> None:
        resp.media = {echo}
"""
            )
    queue_line = "\n        self._queue = context.producer()" if fn.queue else ""
    put = f", puts to queue '{fn.queue}'" if fn.queue else ""
    return f'''"""``{" ".join(methods)} {route}``: what it answers{put}. Say why it exists here."""

from __future__ import annotations

from dataclasses import dataclass

import falcon

from runtime.deps import FunctionContext


class {fn.class_name}:
    """Served by bjoern one request at a time: never wait on anything slow in here."""
{_SETTINGS.format(name=fn.name, upper=fn.name.upper())}
    def __init__(self, context: FunctionContext) -> None:
        self._greeting = context.settings.greeting{queue_line}
{"".join(body)}'''


def _background_source(fn: NewFunction) -> str:
    return f'''"""Consumes queue '{fn.queue}': say what it does with each record, and why in the
background."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime.deps import FunctionContext
from runtime.workers import Message


class {fn.class_name}:
    """Each record is acknowledged when ``handle`` returns; one that raises is retried."""

    @dataclass(frozen=True)
    class Settings:
        log_records: bool = True
        """An example setting: log each record handled."""

    def __init__(self, context: FunctionContext) -> None:
        self._log = logging.getLogger(f"functions.{{context.name}}")
        self._log_records = context.settings.log_records

    def handle(self, message: Message) -> None:
        if self._log_records:
            self._log.info("handled", extra={{"record": message.body}})
'''


def _schedule_source(fn: NewFunction) -> str:
    return f'''"""Every {fn.every_s} s on every instance: say what it keeps up to date, and why."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from runtime.deps import FunctionContext


class {fn.class_name}:
    """``run`` is called every ``every_s`` seconds; one that raises is logged, not retried."""

    @dataclass(frozen=True)
    class Settings:
        log_runs: bool = True
        """An example setting: log each run."""

    def __init__(self, context: FunctionContext) -> None:
        self._log = logging.getLogger(f"functions.{{context.name}}")
        self._log_runs = context.settings.log_runs
        self._runs = 0

    def run(self) -> int:
        self._runs += 1
        if self._log_runs:
            self._log.info("ran", extra={{"runs": self._runs}})
        return self._runs
'''


def _test_source(functions: list[NewFunction], folder: str) -> str:
    files = " and ".join(f"{folder}/{fn.name}.py" for fn in functions)
    head = f'''"""{files}, driven in-process through runtime.testing.

Written by `python -m runtime new`: extend it as the function grows.
"""

from __future__ import annotations

from pathlib import Path

from falcon.testing import TestClient

from runtime import testing

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "functions.yaml"
'''
    tests = []
    for fn in functions:
        if fn.kind == "http":
            path = _sample_path(fn.route or "/")
            for method in fn.methods or ("GET",):
                if fn.queue and method in ("POST", "PUT", "PATCH"):
                    tests.append(
                        f'''

def test_{fn.name}_{method.lower()}_queues_the_record(tmp_path: Path) -> None:
    client = TestClient(testing.create_app(testing.isolated_bundle(MANIFEST, tmp_path)))

    result = client.simulate_request("{method}", "{path}", json={{"example": 1}})

    assert result.status_code == 202
    assert result.json == {{"queued": True}}
'''
                    )
                else:
                    params = (
                        ', "params": {'
                        + ", ".join(
                            f'"{p}": "1"' for p in re.findall(r"\{([^}]*)\}", fn.route or "")
                        )
                        + "}"
                        if "{" in (fn.route or "")
                        else ""
                    )
                    expected = (
                        "None"
                        if method == "HEAD"
                        else f'{{"function": "{fn.name}", "greeting": "hello"{params}}}'
                    )
                    check = (
                        "assert result.text == ''"
                        if method == "HEAD"
                        else f"assert result.json == {expected}"
                    )
                    tests.append(
                        f'''

def test_{fn.name}_answers_{method.lower()}(tmp_path: Path) -> None:
    client = TestClient(testing.create_app(testing.isolated_bundle(MANIFEST, tmp_path)))

    result = client.simulate_request("{method}", "{path}")

    assert result.status_code == 200
    {check}
'''
                    )
        elif fn.kind == "background":
            tests.append(
                f'''

def test_{fn.name}_settles_each_record(tmp_path: Path) -> None:
    bundle = testing.isolated_bundle(MANIFEST, tmp_path)

    result = testing.deliver(bundle, "{fn.name}", {{"example": 1}}, {{"example": 2}})

    assert result.settled == [0, 1]
'''
            )
        else:
            tests.append(
                f'''

def test_{fn.name}_runs(tmp_path: Path) -> None:
    bundle = testing.isolated_bundle(MANIFEST, tmp_path)

    assert testing.run_once(bundle, "{fn.name}") == 1
'''
            )
    uses_client = any(fn.kind == "http" for fn in functions)
    if not uses_client:
        head = head.replace("from falcon.testing import TestClient\n\n", "")
    return head + "".join(tests)
