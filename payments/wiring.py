"""Build the payment objects from the runtime's deps: one place, used by every function."""

from __future__ import annotations

from typing import TypeVar

from payments.processors import AsyncProcessorClient, ProcessorClient
from payments.shared_state import SharedState
from runtime.deps import Deps

Client = TypeVar("Client", ProcessorClient, AsyncProcessorClient)


def processor_clients(deps: Deps, client: type[Client], max_connections: int) -> dict[str, Client]:
    """One ``client`` per configured processor (no connection is opened yet): the blocking
    ``ProcessorClient`` or the event loop's ``AsyncProcessorClient``."""
    forwarder = deps.config.forwarder
    return {
        name: client(
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
