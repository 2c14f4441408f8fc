"""``python -m runtime routes``: the bundle as a table, each setting with where it came from.

One row a function (its kind; route and methods, queue and concurrency, or period; the
handler's ``file:line``), then one line a setting: its value, and whether it is the handler's
default, the manifest's, the config file's or the environment's. Secrets show as ``***``.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from runtime.bundle import Bundle
from runtime.config import FUNCTIONS_SECTION
from runtime.manifest import FunctionSpec
from runtime.schema import secret_paths


def where_defined(spec: FunctionSpec, root: Path) -> str:
    """The handler class's ``file:line``, relative to the manifest's folder when inside it."""
    try:
        path = Path(inspect.getsourcefile(spec.handler) or "?")
        line = inspect.getsourcelines(spec.handler)[1]
    except (OSError, TypeError):
        return spec.handler_ref
    try:
        shown = path.resolve().relative_to(root.resolve())
    except ValueError:
        shown = path
    return f"{shown}:{line}"


def serves(spec: FunctionSpec) -> str:
    """What the function answers or consumes, in a few words."""
    if spec.kind == "http":
        text = f"{','.join(spec.methods)} {spec.route}"
        return f"{text} -> {spec.queue}" if spec.queue else text
    if spec.kind == "background":
        processes = f" x {spec.processes} processes" if spec.processes != 1 else ""
        one = ", one consumer for the deployment" if spec.consumers == "one" else ""
        return f"queue {spec.queue}, {spec.concurrency} in flight{processes}{one}"
    return f"every {spec.every_s:g} s"


def setting_rows(bundle: Bundle, spec: FunctionSpec) -> list[tuple[str, str, str]]:
    """(key, value, origin) for each of the function's settings."""
    value = bundle.settings.get(spec.name)
    schema = spec.settings_schema
    if value is None or schema is None:
        return []
    secrets = set(secret_paths(schema, value))
    rows = []
    for field in dataclasses.fields(schema):
        path = f"{FUNCTIONS_SECTION}.{spec.name}.{field.name}"
        origin = bundle.source.origin(path)
        if origin is None:
            origin = "functions.yaml" if field.name in spec.settings_given else "default"
        elif origin == "file":
            origin = str(bundle.source.file or "config file")
        shown = "***" if field.name in secrets else repr(getattr(value, field.name))
        rows.append((field.name, shown, origin))
    return rows


def table(bundle: Bundle) -> str:
    """The whole bundle, ready to print."""
    manifest = bundle.manifest
    rows = [
        (spec.name, spec.kind, serves(spec), where_defined(spec, manifest.root))
        for spec in manifest.functions
    ]
    head = ("NAME", "KIND", "SERVES", "HANDLER")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(3)]
    lines = [f"{manifest.path} (instance {bundle.runtime.instance})", ""]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            [*(cell.ljust(width) for cell, width in zip(cells, widths, strict=False)), cells[3]]
        ).rstrip()

    lines.append(line(head))
    for spec, row in zip(manifest.functions, rows, strict=True):
        lines.append(line(row))
        settings = setting_rows(bundle, spec)
        key_width = max((len(key) + len(value) + 3 for key, value, _ in settings), default=0)
        for key, value, origin in settings:
            lines.append(f"{'':<{widths[0]}}    {f'{key} = {value}':<{key_width}}  ({origin})")
    return "\n".join(lines)
