"""The original design, written faithfully as the seed describes it, for comparison.

One Flask process: `POST /api/<statistic>` hands a closure to a pool of CPU-count
threads and answers `{"job_id": "job_id_N"}`; each thread filters the whole DataFrame
with pandas for its job (all 34 columns read at start, nothing precomputed) and writes
`results/<job_id>.json` with a plain `open(..., "w")`; `GET /api/get_results/<job_id>`
answers "running" until that file exists, then reads it. A poll can read a half-written
file: that is an HTTP 500, as in the original. Clients poll every few milliseconds.

    python -m bench.original --data CSV --results-dir DIR --port-file FILE
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.service import Processes, Target, read_json, wait_until

POLL_INTERVAL_S = 0.005
YEAR_MIN, YEAR_MAX = 2011, 2022
Job = tuple[str, dict[str, Any]]


# --- server side ---------------------------------------------------------------------


class DataIngestor:
    """The whole CSV in one DataFrame; every statistic filters it again, per request."""

    def __init__(self, csv_path: str) -> None:
        import pandas as pd

        from protocol.questions import BEST_IS_MIN

        self.data = pd.read_csv(csv_path)
        self.best_is_min = BEST_IS_MIN

    def _rows(self, question: str) -> Any:
        df = self.data
        mask = (df["Question"] == question) & (df["YearStart"] >= YEAR_MIN)
        return df[mask & (df["YearEnd"] <= YEAR_MAX)].dropna(subset=["Data_Value"])

    def states_mean(self, question: str) -> dict[str, float]:
        means = self._rows(question).groupby("LocationDesc")["Data_Value"].mean()
        return dict(means.sort_values().items())

    def state_mean(self, question: str, state: str) -> dict[str, float]:
        rows = self._rows(question)
        return {state: float(rows[rows["LocationDesc"] == state]["Data_Value"].mean())}

    def best5(self, question: str) -> dict[str, float]:
        means = self.states_mean(question)
        ordered = list(means.items()) if question in self.best_is_min else list(means.items())[::-1]
        return dict(ordered[:5])

    def worst5(self, question: str) -> dict[str, float]:
        means = self.states_mean(question)
        ordered = list(means.items())[::-1] if question in self.best_is_min else list(means.items())
        return dict(ordered[:5])

    def global_mean(self, question: str) -> dict[str, float]:
        return {"global_mean": float(self._rows(question)["Data_Value"].mean())}

    def diff_from_mean(self, question: str) -> dict[str, float]:
        overall = self.global_mean(question)["global_mean"]
        return {state: overall - mean for state, mean in self.states_mean(question).items()}

    def state_diff_from_mean(self, question: str, state: str) -> dict[str, float]:
        overall = self.global_mean(question)["global_mean"]
        return {state: overall - self.state_mean(question, state)[state]}

    def mean_by_category(self, question: str) -> dict[str, float]:
        keys = ["LocationDesc", "StratificationCategory1", "Stratification1"]
        means = self._rows(question).groupby(keys)["Data_Value"].mean()
        return {str(key): float(value) for key, value in means.items()}

    def state_mean_by_category(self, question: str, state: str) -> dict[str, Any]:
        rows = self._rows(question)
        rows = rows[rows["LocationDesc"] == state]
        means = rows.groupby(["StratificationCategory1", "Stratification1"])["Data_Value"].mean()
        return {state: {str(key): float(value) for key, value in means.items()}}


class ThreadPool:
    """CPU-count threads taking (job_id, closure) from a queue, results written as files."""

    def __init__(self, results_dir: Path) -> None:
        self.results_dir = results_dir
        self.tasks: queue.Queue[tuple[str, Callable[[], Any]] | None] = queue.Queue()
        count = int(os.environ.get("TP_NUM_OF_THREADS", os.cpu_count() or 1))
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def add_task(self, job_id: str, task: Callable[[], Any]) -> None:
        self.tasks.put((job_id, task))

    def _run(self) -> None:
        while (item := self.tasks.get()) is not None:
            job_id, task = item
            try:
                result = task()
            except Exception as exc:
                result = {"error": str(exc)}
            with open(self.results_dir / f"{job_id}.json", "w") as out:  # not atomic, as seeded
                json.dump(result, out)


def make_app(data: str, results_dir: Path) -> Any:
    """The Flask app: nine POST routes and GET get_results, as the seed's webserver."""
    from flask import Flask, jsonify, request

    app = Flask("le_stats_sportif_original")
    ingestor = DataIngestor(data)
    pool = ThreadPool(results_dir)
    counter = {"next": 1}
    lock = threading.Lock()

    @app.post("/api/<statistic>")
    def submit(statistic: str) -> Any:
        params = request.get_json()
        method = getattr(ingestor, statistic)
        with lock:
            job_id = f"job_id_{counter['next']}"
            counter["next"] += 1
        pool.add_task(job_id, lambda: method(**params))
        return jsonify({"job_id": job_id})

    @app.get("/api/get_results/<job_id>")
    def get_results(job_id: str) -> Any:
        number = job_id.removeprefix("job_id_")
        if not number.isdigit() or not 0 < int(number) < counter["next"]:
            return jsonify({"status": "error", "reason": "Invalid job_id"})
        path = results_dir / f"{job_id}.json"
        if path.exists():
            with open(path) as stream:
                return jsonify({"status": "done", "data": json.load(stream)})
        return jsonify({"status": "running"})

    return app


def serve(data: str, results_dir: Path, port_file: Path) -> int:
    from werkzeug.serving import make_server

    results_dir.mkdir(parents=True, exist_ok=True)
    server = make_server("127.0.0.1", 0, make_app(data, results_dir), threaded=True)
    partial = port_file.with_suffix(".tmp")
    partial.write_text(json.dumps({"port": server.port}))
    partial.replace(port_file)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    return 0


# --- producer side: submit, then poll every few milliseconds -----------------------------


class _Http:
    """One keep-alive connection; a 500 (a half-written result file) counts as an error."""

    def __init__(self, address: str) -> None:
        host, port = address.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.errors = 0

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any] | None:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if payload else {}
        self.conn.request(method, path, body=payload, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        if response.status != 200:
            self.errors += 1
            return None
        loaded: dict[str, Any] = json.loads(raw)
        return loaded


class Producer:
    """Keep `window` jobs submitted; every few ms, poll each of them once."""

    def __init__(self, address: str) -> None:
        self.http = _Http(address)

    def run(self, jobs: Iterable[Job], window: int) -> tuple[list[float], int]:
        """Latencies in seconds, and how many HTTP errors the polls met."""
        http, errors_before = self.http, self.http.errors
        pending: dict[str, float] = {}
        latencies: list[float] = []
        todo = iter(jobs)
        more = True
        while more or pending:
            while more and len(pending) < window:
                job = next(todo, None)
                if job is None:
                    more = False
                    break
                started = time.perf_counter()
                reply = http.call("POST", f"/api/{job[0]}", job[1])
                if reply is not None:
                    pending[reply["job_id"]] = started
            if pending:
                time.sleep(POLL_INTERVAL_S)  # as the seed's clients: a poll every few ms
                _poll_all(http, pending, latencies)
        return latencies, http.errors - errors_before

    def close(self) -> None:
        self.http.conn.close()


def _poll_all(http: _Http, pending: dict[str, float], latencies: list[float]) -> None:
    for job_id, started in list(pending.items()):
        reply = http.call("GET", f"/api/get_results/{job_id}")
        if reply is not None and reply["status"] != "running":
            latencies.append(time.perf_counter() - started)
            del pending[job_id]


class OriginalService(Processes):
    """The original server as one real process."""

    name = "original"

    def __init__(self, state_dir: Path, data: Path) -> None:
        super().__init__(state_dir)
        self.data = data
        self.address = ""

    def start(self) -> None:
        port_file = self.state_dir / "original.port.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port_file.unlink(missing_ok=True)
        args = [
            "-m",
            "bench.original",
            f"--data={self.data}",
            f"--results-dir={self.state_dir / 'results'}",
            f"--port-file={port_file}",
        ]
        self.spawn(args, "original")

        def bound() -> dict[str, Any] | None:
            self.check_alive()
            return read_json(port_file)

        self.address = f"127.0.0.1:{wait_until(bound, 60.0, 'the Flask server')['port']}"

    def target(self) -> Target:
        return Target("original", self.address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.original", description=__doc__)
    parser.add_argument("--data", required=True)
    parser.add_argument("--results-dir", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)
    return serve(args.data, args.results_dir, args.port_file)


if __name__ == "__main__":
    sys.exit(main())
