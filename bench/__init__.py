"""The side-by-side benchmark of issue 5: our service against its baselines.

`python -m bench` (or `./run.sh bench`) measures, in one run on one machine and with one
workload: the echo-only ZeroMQ broker (the ceiling, `bench.echo`), our service (broker +
workers, driven through `clients.Client.map`), the original design (`bench.original`:
Flask, a thread pool, pandas per request, JSON result files, polling clients) and Celery
with Redis (`bench.celery_app`, when `redis-server`, celery and redis are installed).
`bench.driver` runs the producer processes, `bench.report` prints and saves the tables.
Every service is a set of real processes on OS-picked loopback ports, always stopped.
(`bench.soak`, the random-kill soak of issue 3, lives here too but is separate.)
`python -m bench.NAME` (`./run.sh bench NAME`) runs one measurement of its own, e.g.
`bench.ab`: revisions side by side, paired ratios to a baseline beside an A/A control.
"""
