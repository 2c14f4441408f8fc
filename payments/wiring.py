"""Build the payment objects from the bundle's config and the runtime's deps: one place."""

from __future__ import annotations

from typing import TypeVar

from payments.config import PaymentsConfig
from payments.processors import AsyncProcessorClient, HealthClient
from payments.shared_state import SharedState
from runtime.deps import Deps

Client = TypeVar("Client", HealthClient, AsyncProcessorClient)


def processor_clients(
    config: PaymentsConfig, client: type[Client], max_connections: int
) -> dict[str, Client]:
    """One ``client`` per configured processor (no connection is opened yet): the event
    loop's ``AsyncProcessorClient`` or the poller's blocking ``HealthClient``."""
    forwarder = config.forwarder
    return {
        name: client(
            name,
            processor.url,
            connect_timeout_s=forwarder.connect_timeout_s,
            request_timeout_s=forwarder.request_timeout_s,
            max_connections=max_connections,
        )
        for name, processor in config.processors.items()
    }


def shared_state(config: PaymentsConfig, deps: Deps) -> SharedState:
    """The processors' shared health and breakers, in the runtime's Memcached."""
    return SharedState(
        deps.memcache,
        deps.clock,
        list(config.processors),
        config.breaker,
        config.router.state_cache_ms,
    )
