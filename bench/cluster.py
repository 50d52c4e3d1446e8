"""Several of our brokers on one store, with workers connected to all of them.

`BrokerGroup` holds one `bench.harness.Service` per broker (each its own state directory
and endpoints, all with the same store URL) and starts workers with every broker's
worker endpoint (`--connect A,B,C`), as a user of several brokers would. It gives
clients every broker's endpoint too, starting at a chosen one, so that producers spread
over the brokers and move on when theirs dies. A killed broker restarts on the same
endpoints and state directory. With one broker and the default store it is the plain
single-broker service. The failover test and the soak (bench/soak.py) use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import Service


class BrokerGroup:
    """`count` brokers on `store` (None: each its own SQLite), workers shared by all.

    `make(state_dir)` builds each broker's service (unstarted); the default builds a
    `Service` with `broker_flags`. Workers are spawned by the first broker's service,
    which also stops them.
    """

    def __init__(
        self,
        state_dir: Path,
        data: Path,
        count: int = 1,
        *,
        store: str | None = None,
        **broker_flags: Any,
    ) -> None:
        flags = {**broker_flags, "store": store} if store else broker_flags
        self.services = [
            Service(state_dir / f"broker-{n}", data, workers=0, **flags) for n in range(count)
        ]

    @classmethod
    def of(cls, services: list[Service]) -> BrokerGroup:
        """A cluster of services already made (and started) by someone else."""
        cluster = cls.__new__(cls)
        cluster.services = services
        return cluster

    @property
    def workers(self) -> list[Any]:
        return self.services[0].workers

    def start_brokers(self) -> None:
        for service in self.services:
            service.start_broker()

    def worker_endpoints(self) -> str:
        return ",".join(service.worker_endpoint for service in self.services)

    def client_endpoints(self, first: int = 0) -> str:
        """Every broker's client endpoint, starting with broker `first` (mod count)."""
        endpoints = [service.client_endpoint for service in self.services]
        first %= len(endpoints)
        return ",".join(endpoints[first:] + endpoints[:first])

    def start_workers(self, count: int, **flags: Any) -> list[Any]:
        """Start `count` workers on every broker; wait until every live broker has them."""
        live_before = self.live_workers()
        started = self.services[0].start_workers(count, connect=self.worker_endpoints(), **flags)
        self.wait_workers(live_before + count, skip=0)
        return started

    def start_worker(self, **flags: Any) -> Any:
        """Start one worker on every broker (not waited for)."""
        return self.services[0].start_worker(connect=self.worker_endpoints(), **flags)

    def live_workers(self) -> int:
        return len([proc for proc in self.workers if proc.poll() is None])

    def wait_workers(self, count: int, skip: int | None = None) -> None:
        """Until every broker (but broker `skip`) has exactly `count` workers registered."""
        for number, service in enumerate(self.services):
            if number != skip and service.broker is not None and service.broker.poll() is None:
                service.wait_workers(count)

    def kill_broker(self, number: int) -> None:
        self.services[number].kill_broker()

    def start_broker(self, number: int) -> None:
        """Start broker `number` again, on its endpoints and state directory."""
        self.services[number].start_broker()

    def events(self, event: str) -> list[dict[str, Any]]:
        """Every broker's structured events (the workers' are in the first's directory)."""
        return [e for service in self.services for e in service.events(event)]

    def stop(self) -> None:
        for service in reversed(self.services):  # the first stops the workers, last
            service.stop()
