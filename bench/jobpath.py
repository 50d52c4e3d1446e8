"""`python -m bench.jobpath`: count what one job's trip costs, for docs/protocol.md.

Two trips, each on a fresh service (a broker and one worker, both under cProfile):
`Client.submit` then `Client.wait`, and one `Client.state_mean(...)` call (submit and
wait in one round trip). Each is made `--jobs` times; per job it reports:

- network messages: ZeroMQ messages sent by the client, the broker and the worker;
- thread hand-offs: in the client, how often the job's path moves to another thread
  (the broker and the worker run a job on their main thread);
- modules and named functions of this project (clients, protocol, broker, workers) on
  the path: every such function the client called for the last job, and every one the
  broker and the worker called at least once per job.

Figures are counts, not times, so the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import pstats
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from bench.data import dataset
from bench.driver import QUESTION_TEXTS, STATE_NAMES
from bench.harness import Service
from bench.plan import BASE_ROWS
from bench.service import ROOT, wait_until

PROJECT = ("clients", "protocol", "broker", "workers")
Function = tuple[str, str]  # (module path, function name)


class Recorder:
    """A profile hook noting, in order, the thread and project function of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, Function]] = []
        self.on = False

    def __call__(self, frame: FrameType, event: str, _arg: Any) -> None:
        if self.on and event == "call":
            where = _project_module(frame.f_code.co_filename)
            if where is not None:
                self.calls.append((threading.get_ident(), (where, frame.f_code.co_qualname)))


def _project_module(filename: str) -> str | None:
    try:
        relative = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    return str(relative) if relative.parts[0] in PROJECT else None


def _named(qualified_name: str) -> bool:
    """Not a lambda, comprehension or generator expression."""
    return not qualified_name.rpartition(".")[2].startswith("<")


def client_path(trip: Callable[[], Any], recorder: Recorder) -> dict[str, Any]:
    """Functions, modules, thread hand-offs and messages sent of one `trip` in this process."""
    recorder.calls.clear()
    recorder.on = True
    trip()
    recorder.on = False
    threads = [thread for thread, _ in recorder.calls]
    functions = {function for _, function in recorder.calls if _named(function[1])}
    sends = sum(name.endswith("send_frames") for _, (_, name) in recorder.calls)
    return {
        "functions": sorted(f"{module}:{name}" for module, name in functions),
        "thread_hand_offs": sum(a != b for a, b in itertools.pairwise(threads)),
        "messages_sent": sends,
    }


def process_path(profile: Path, jobs: int) -> dict[str, Any]:
    """Project functions a process called at least once per job, and messages it sent."""
    stats: dict[Any, Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    functions: set[str] = set()
    sends = 0
    for (filename, _line, name), (primitive, *_rest) in stats.items():
        module = _project_module(filename)
        if module is not None and primitive >= jobs and _named(name):
            functions.add(f"{module}:{name}")
        if name in ("send_frames", "send_multipart") and module is not None:
            sends += primitive
    return {"functions": sorted(functions), "messages_sent": round(sends / jobs, 2)}


def measure(kind: str, jobs: int, data: Path, work: Path) -> dict[str, Any]:
    """One fresh service, `jobs` trips of `kind`, then the three processes' counts."""
    from clients import Client

    state = work / kind
    broker_prof, worker_prof = state / "broker.prof", state / "worker.prof"
    recorder = Recorder()
    threading.setprofile(recorder)  # the client's threads, if it starts any
    sys.setprofile(recorder)
    service = Service(state, data, 0, broker_prefix=["-m", "cProfile", "-o", str(broker_prof)])
    try:
        with service:
            _start_profiled_worker(service, worker_prof)
            with Client(service.client_endpoint, timeout=30) as client:
                trip = _trip(client, kind)
                for _ in range(jobs - 1):
                    trip()
                mine = client_path(trip, recorder)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    broker, worker = process_path(broker_prof, jobs), process_path(worker_prof, jobs)
    functions = mine["functions"] + broker["functions"] + worker["functions"]
    return {
        "trip": kind,
        "jobs": jobs,
        "messages": mine["messages_sent"] + broker["messages_sent"] + worker["messages_sent"],
        "client_thread_hand_offs": mine["thread_hand_offs"],
        "modules": sorted({f.split(":")[0] for f in functions}),
        "named_functions": len(functions),
        "client": mine,
        "broker": broker,
        "worker": worker,
    }


def _trip(client: Any, kind: str) -> Callable[[], Any]:
    """Each trip a job never asked before (the worker would answer a repeat from its cache)."""
    jobs = itertools.cycle(itertools.product(QUESTION_TEXTS, STATE_NAMES))

    def submit_then_wait() -> Any:
        question, state = next(jobs)
        return client.wait(client.submit("state_mean", question=question, state=state))

    def call() -> Any:
        return client.state_mean(*next(jobs))

    return submit_then_wait if kind == "submit+wait" else call


def _start_profiled_worker(service: Service, profile: Path) -> None:
    args = ["-m", "cProfile", "-o", str(profile), "-m", "workers.worker"]
    args += [f"--connect={service.worker_endpoint}", f"--data={service.data}"]
    args += [f"--state-dir={service.state_dir}", "--name=worker-1"]
    service.spawn(args, "worker-1")
    with service.client() as client:
        wait_until(lambda: client.stats()["workers"], 60.0, "the worker to register")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobpath", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200, help="trips of each kind (default 200)")
    parser.add_argument("--details", action="store_true", help="also list every function")
    args = parser.parse_args(argv)
    data = dataset(BASE_ROWS)
    (ROOT / "var").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jobpath-", dir=ROOT / "var") as work:
        results = [measure(kind, args.jobs, data, Path(work)) for kind in ("submit+wait", "call")]
    for result in results:
        if not args.details:
            for side in ("client", "broker", "worker"):
                result[side] = {"functions": len(result[side]["functions"])}
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
