#!/usr/bin/env bash
# Le Stats Sportif: one entry point. `./run.sh help` lists the commands.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.lss-installed"
STANDIN="data/standin_nutrition_activity_obesity_usa.csv"
SUBSET="data/nutrition_activity_obesity_usa_subset.csv"
FULL="data/nutrition_activity_obesity_usa_full.csv"

say() { printf '[run.sh] %s\n' "$*" >&2 || true; }  # a closed stderr must not stop us

setup() {
    # Create the venv and install the pinned requirements, once (again when they change).
    if [[ -x "$PY" && -f "$STAMP" && "$STAMP" -nt requirements.txt && "$STAMP" -nt pyproject.toml ]]; then
        return
    fi
    say "setting up $VENV (pinned requirements.txt)"
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    touch "$STAMP"
}

data_file() {
    # $LSS_DATA, else the real subset or full file if present, else a generated stand-in.
    if [[ -n "${LSS_DATA:-}" ]]; then
        echo "$LSS_DATA"
    elif [[ -f "$SUBSET" ]]; then
        echo "$SUBSET"
    elif [[ -f "$FULL" ]]; then
        echo "$FULL"
    else
        if [[ ! -f "$STANDIN" ]]; then
            say "no data set found: generating a deterministic stand-in at $STANDIN"
            say "(for the real CDC file run: ./run.sh download-data)"
            "$PY" -m workers.standin --rows 18000 --out "$STANDIN" >&2
        fi
        echo "$STANDIN"
    fi
}

serve() {
    # The service never outlives this script. Its processes run in sessions of their own
    # (a Ctrl-C reaches only us, and we decide what each one gets), are told our pid
    # (LSS_PARENT_PID) and shut down when we die, however we die (protocol/lifetime.py).
    # A dead stderr (`./run.sh | tee log`, then Ctrl-C kills tee) must not kill us
    # before we have passed the signal on: SIGPIPE is ignored and say() never fails.
    local data state http_addr
    trap '' PIPE
    trap 'on_interrupt' INT TERM HUP
    data="$(data_file)"
    state="${LSS_STATE_DIR:-var}"
    export LSS_DATA="$data" LSS_STATE_DIR="$state" LSS_PARENT_PID=$$
    say "data: $data"
    start_child "$PY" -m broker --data "$data" "$@"
    wait_up broker "${SERVE_PIDS[0]}"
    start_child "$PY" -m workers
    http_addr="${LSS_HTTP_ADDR:-127.0.0.1:5000}"
    if [[ "$http_addr" != "off" ]] && "$PY" -c 'import clients.gateway' 2>/dev/null; then
        start_child "$PY" -m clients.gateway --listen "$http_addr"
        wait_up gateway "${SERVE_PIDS[2]}"
    fi
    wait_up workers "${SERVE_PIDS[0]}" "${SERVE_PIDS[1]}"
    if ((${#SERVE_PIDS[@]} > 2)); then
        say "dashboard on http://$http_addr/ (HTTP API, the original REST routes, under /api/)"
    fi
    say "service up: producers on ${LSS_CLIENT_ENDPOINT:-tcp://127.0.0.1:5555}, workers on ${LSS_WORKER_ENDPOINT:-tcp://127.0.0.1:5556}"
    say "try (another terminal):  source .venv/bin/activate; lss status"
    say "Ctrl-C shuts down gracefully (a second Ctrl-C stops at once)"
    wait_all
}

wait_up() {
    # Until our own broker answers, the gateway has bound its address, or a worker has
    # loaded the data (clients/readiness.py). Else stop all we started and exit: with
    # the helper's one line, or with the code of the process that stopped (it said why).
    local why status=0 pid
    why="$("$PY" -m clients.readiness "$@" 2>&1)" || status=$?
    ((status == 0)) && return
    [[ -n "$why" ]] && say "$why"
    for pid in "${@:2}"; do
        if ! kill -0 "$pid" 2>/dev/null; then wait "$pid" || status=$?; break; fi
    done
    stop_now
    exit "$status"
}

SERVE_PIDS=()
start_child() {
    # A session of its own: its pid is also its process group (the workers' supervisor
    # shares its group with the workers), so `stop_now` reaches every process.
    setsid "$@" &
    SERVE_PIDS+=($!)
}

INTERRUPTS=0
on_interrupt() {
    INTERRUPTS=$((INTERRUPTS + 1))
    if ((INTERRUPTS == 1)); then
        say "graceful shutdown: finishing accepted jobs"
        kill -TERM "${SERVE_PIDS[0]}" 2>/dev/null || true
    else
        say "stopping now"
        stop_now
    fi
}

stop_now() {
    local pid
    for pid in "${SERVE_PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
}

wait_all() {
    # The broker drains and then releases the workers; the gateway follows it.
    local status=0 pid
    # `wait` returns early (128 + n) when a trapped signal arrives: wait again, then
    # ask for the exit status, which bash keeps for a child it has reaped.
    while kill -0 "${SERVE_PIDS[0]}" 2>/dev/null; do wait "${SERVE_PIDS[0]}" || true; done
    wait "${SERVE_PIDS[0]}" || status=$?
    for pid in "${SERVE_PIDS[@]:1}"; do
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do wait "$pid" 2>/dev/null || true; done
    done
    say "stopped"
    return "$status"
}

browser_setup() {
    # The dashboard's browser test needs Debian's chromium and chromium-driver: install
    # them when we can (root with apt), quietly; otherwise that test skips with the reason.
    [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]] && return
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        say "installing chromium and chromium-driver for the dashboard's browser test"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends chromium chromium-driver; } >/dev/null 2>&1 ||
            say "could not install chromium: the browser test will skip"
    fi
}

run_tests() {
    # Lint first: a red lint is a red build, and it takes seconds.
    lint
    browser_setup
    # Two processes (CI has two cores), each module's tests on one (tests/conftest.py):
    # much of the suite waits on services. `-n 0` runs it in this process.
    "$PY" -m pytest -n 2 --dist loadgroup "$@"
}

lint() {
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
}

usage() {
    cat <<'EOF'
usage: ./run.sh [command] [args...]

  (no command)   set up, then run broker + workers (+ HTTP gateway) on the default data set
  test [ARGS]    set up, lint, then run the test suite on two processes (pytest ARGS;
                 -m slow: soak/bench; -n 0: in one process)
  lint           ruff (lint + format check) and mypy --strict
  broker [ARGS]  run the broker only           (python -m broker --help)
  workers [ARGS] run the worker pool only      (python -m workers --help)
  client [ARGS]  the lss command line          (lss --help)
  download-data  download the real CDC file into data/ (needs network)
  keys [DIR] [ROLE:NAME...]
                 CurveZMQ key pairs with roles (worker, client, admin; default var/keys
                 worker:worker client:client admin:admin)
  bench [ARGS]   benchmark against baselines   (python -m bench --help)
  bench NAME [ARGS]
                 one measurement of its own: slowloris, years, store_indexes, jobpath, ...
                 (python -m bench.NAME)
  soak [ARGS]    random-kill soak test         (--minutes N)
EOF
}

cmd="${1:-serve}"
[[ $# -gt 0 ]] && shift
case "$cmd" in
    serve) setup; serve "$@" ;;
    test) setup; run_tests "$@" ;;
    lint) setup; lint ;;
    broker) setup; exec "$PY" -m broker --data "$(data_file)" "$@" ;;
    workers)
        setup
        if [[ -z "${LSS_DATA:-}" && ! " $* " =~ \ --(data|fetch-data) ]]; then
            LSS_DATA="$(data_file)"
            export LSS_DATA
        fi
        exec "$PY" -m workers "$@"
        ;;
    client) setup; exec "$VENV/bin/lss" "$@" ;;
    download-data) setup; exec "$PY" -m workers.download --out "$FULL" "$@" ;;
    keys) setup; exec "$PY" -m protocol.curve "${1:-var/keys}" "${@:2}" ;;
    bench)
        setup
        # `./run.sh bench NAME [ARGS]` runs one measurement of its own (bench/NAME.py).
        if [[ $# -gt 0 && "$1" =~ ^[a-z_]+$ && -f "bench/$1.py" ]]; then
            module="bench.$1"
            shift
            exec "$PY" -m "$module" "$@"
        fi
        exec "$PY" -m bench "$@"
        ;;
    soak) setup; exec "$PY" -m bench.soak "$@" ;;
    help | -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
