"""Build the payment objects from the runtime's deps: one place, used by every function."""

from __future__ import annotations

from payments.processors import AsyncProcessorClient, ProcessorClient
from payments.shared_state import SharedState
from runtime.deps import Deps


def processor_clients(deps: Deps, pool_size: int) -> dict[str, ProcessorClient]:
    """One pooled client per configured processor (no connection is opened yet)."""
    forwarder = deps.config.forwarder
    return {
        name: ProcessorClient(
            name,
            processor.url,
            connect_timeout_s=forwarder.connect_timeout_s,
            request_timeout_s=forwarder.request_timeout_s,
            pool_size=pool_size,
        )
        for name, processor in deps.config.processors.items()
    }


def async_processor_clients(deps: Deps, max_connections: int) -> dict[str, AsyncProcessorClient]:
    """One event-loop client per configured processor (no connection is opened yet)."""
    forwarder = deps.config.forwarder
    return {
        name: AsyncProcessorClient(
            name,
            processor.url,
            connect_timeout_s=forwarder.connect_timeout_s,
            request_timeout_s=forwarder.request_timeout_s,
            max_connections=max_connections,
        )
        for name, processor in deps.config.processors.items()
    }


def shared_state(deps: Deps) -> SharedState:
    """The processors' shared health and breakers."""
    config = deps.config
    return SharedState(
        deps.memcache,
        deps.clock,
        list(config.processors),
        config.breaker,
        config.router.state_cache_ms,
    )
