"""The bundle, loaded and checked: everything ``serve`` would trip on, found before it forks.

``load_bundle`` reads the config, loads the manifest it names (importing every handler and
the bundle's own schema, metrics and record types), then types the bundle's config and each
function's settings. ``check_bundle`` builds every function once, with connections that
refuse to be used, so a constructor that raises is reported here rather than by a child
restarting forever. ``python -m runtime check`` runs both; ``serve`` runs both before it forks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.config import (
    FUNCTIONS_SECTION,
    RUNTIME_SECTIONS,
    ConfigSource,
    RuntimeConfig,
    read_config,
    runtime_config,
)
from runtime.deps import Deps, FunctionContext
from runtime.errors import ConfigError, FunctionInitError
from runtime.manifest import FunctionSpec, Manifest, load_manifest
from runtime.schema import as_raw, build, field_names, secret_paths
from runtime.stopping import Stopping


@dataclass(frozen=True)
class Bundle:
    """A manifest with its config: what one instance serves and runs."""

    runtime: RuntimeConfig
    manifest: Manifest
    config: Any
    """The bundle's own config, an instance of the manifest's schema (``None`` without one)."""
    settings: Mapping[str, Any]
    """Function name -> its typed settings (``None`` where the handler declares none)."""
    source: ConfigSource
    """Where each value came from (``origin``)."""

    def context(
        self, spec: FunctionSpec, deps: Deps, stopping: Stopping | None = None
    ) -> FunctionContext:
        """The context ``spec``'s handler is built with."""
        return FunctionContext(
            name=spec.name,
            deps=deps,
            settings=self.settings.get(spec.name),
            config=self.config,
            queue=spec.queue,
            stopping=stopping or Stopping(),
        )

    def construct(self, spec: FunctionSpec, deps: Deps, stopping: Stopping | None = None) -> Any:
        """Build ``spec``'s handler.

        Raises:
            FunctionInitError: its constructor raised; the message names the function.
        """
        try:
            return spec.handler(self.context(spec, deps, stopping))
        except Exception as exc:
            raise FunctionInitError(
                f"{self.manifest.path}: function '{spec.name}': building "
                f"{spec.handler.__name__} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def deps(self, **kwargs: Any) -> Deps:
        """Deps for this bundle's functions (``Deps``' keyword arguments pass through)."""
        return Deps(self.runtime, self.manifest, **kwargs)


def load_bundle(
    config_path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    instance: str | None = None,
    manifest_path: str | Path | None = None,
    data: Mapping[str, Any] | None = None,
) -> Bundle:
    """Read the config, load the manifest it names, type the bundle's config and settings.

    ``data`` stands for the config file's content (``read_config``); ``manifest_path`` for
    the config's ``manifest`` key.

    Raises:
        RuntimeStartError: a config key, the manifest, a handler, a setting is wrong.
    """
    source = read_config(config_path, environ=environ, instance=instance, data=data)
    runtime = runtime_config(source)
    manifest = load_manifest(manifest_path or runtime.manifest)
    return bind(manifest, source, runtime)


def bind(manifest: Manifest, source: ConfigSource, runtime: RuntimeConfig) -> Bundle:
    """``manifest`` with the config of ``source``: its own sections and the settings typed."""
    env = source.env
    for name, key in manifest.config_env.items():
        if env.get(name):
            source.set(key, env[name], origin=source.env_origin(name))
    schema = manifest.config_schema
    bundle_sections = set(field_names(schema)) if schema else set()
    allowed = RUNTIME_SECTIONS | bundle_sections | {FUNCTIONS_SECTION}
    unknown = sorted(set(source.raw) - allowed)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown key; expected one of {', '.join(sorted(allowed))}"
        )
    config = build(schema, source.section(bundle_sections)) if schema else None
    settings = _settings(manifest, source.raw.get(FUNCTIONS_SECTION, {}))
    secrets = list(secret_paths(RuntimeConfig, runtime))
    if schema:
        secrets += secret_paths(schema, config)
    for name, value in settings.items():
        spec = manifest.function(name)
        if value is not None and spec.settings_schema is not None:
            secrets += secret_paths(spec.settings_schema, value, f"{FUNCTIONS_SECTION}.{name}")
    source.refuse_world_readable_secrets(secrets)
    return Bundle(runtime, manifest, config, settings, source)


def _settings(manifest: Manifest, overrides: Any) -> dict[str, Any]:
    """Each function's settings: its manifest entry's, with the config's ``functions.<name>``
    over them."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{FUNCTIONS_SECTION}: expected a mapping of function name to settings")
    names = {spec.name for spec in manifest.functions}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(
            f"{FUNCTIONS_SECTION}.{unknown[0]}: no such function in {manifest.path}; "
            f"expected one of {', '.join(sorted(names))}"
        )
    settings = {}
    for spec in manifest.functions:
        schema = spec.settings_schema
        override = overrides.get(spec.name)
        path = f"{FUNCTIONS_SECTION}.{spec.name}"
        if schema is None:
            if override:
                raise ConfigError(
                    f"{path}: '{spec.handler.__name__}' declares no Settings dataclass; this "
                    "function has no settings to set"
                )
            settings[spec.name] = None
        elif override is None and spec.settings is not None:
            settings[spec.name] = spec.settings
        else:
            if not isinstance(override or {}, Mapping):
                raise ConfigError(f"{path}: expected a mapping, found {type(override).__name__}")
            base = as_raw(spec.settings) if spec.settings is not None else {}
            settings[spec.name] = build(schema, {**base, **(override or {})}, path)
    return settings


def check_bundle(bundle: Bundle) -> None:
    """Build every function once with connections that refuse to be used.

    Raises:
        FunctionInitError: a constructor raised (or used a connection).
    """
    deps = bundle.deps(offline=True)
    for spec in bundle.manifest.functions:
        bundle.construct(spec, deps)


def replace_settings(bundle: Bundle, name: str, **changes: Any) -> Bundle:
    """``bundle`` with some of function ``name``'s settings changed (tests, tools)."""
    settings = dict(bundle.settings)
    settings[name] = dataclasses.replace(settings[name], **changes)
    return dataclasses.replace(bundle, settings=settings)
