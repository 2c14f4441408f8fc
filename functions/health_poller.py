"""Health poller (schedule): reads each processor's service-health for the whole deployment.

Every instance runs it every second, but only the caller that wins the shared turn in
Memcached reads, at most once per ``router.health_min_interval_s`` (the processors allow one
call per 5 s and answer 429 beyond), and publishes what it read for every worker.
"""

from __future__ import annotations

import logging

from payments.processors import HealthClient, ProcessorError
from payments.wiring import processor_clients, shared_state
from runtime.deps import FunctionContext

_log = logging.getLogger("functions.health_poller")


class HealthPoller:
    """One read of each processor per turn; failures are counted, never fatal."""

    def __init__(self, context: FunctionContext) -> None:
        self._metrics = context.deps.metrics
        self._clients = processor_clients(context.config, HealthClient, max_connections=2)
        self._shared = shared_state(context.config, context.deps)
        self._min_interval_s = context.config.router.health_min_interval_s
        for name in self._clients:  # a zero per processor, so the series exists from the start
            self._metrics.health_check_failures.labels(name)

    def run(self) -> None:
        if not self._shared.take_health_turn(self._min_interval_s):
            return
        for name, client in self._clients.items():
            try:
                health = client.service_health()
            except ProcessorError as exc:
                self._metrics.health_check_failures.labels(name).inc()
                _log.warning(
                    "service-health read failed", extra={"processor": name, "error": str(exc)}
                )
                continue
            self._shared.record_health(name, health)
            _log.debug(
                "service-health",
                extra={
                    "processor": name,
                    "failing": health.failing,
                    "min_response_ms": health.min_response_ms,
                },
            )
