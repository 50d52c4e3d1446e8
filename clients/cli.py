"""`lss`, the command line of an LSS service (also `python -m clients.cli`, `./run.sh client`).

    lss questions                          -> the questions and their short ids
    lss submit best5 --question Q          -> job_id_7   (--wait prints the answer; --format csv;
                                              --priority 0..9, --deadline SECONDS)
    lss get job_id_7 / lss wait job_id_7   -> the job's state / its answer, as JSON (or CSV)
    lss cancel job_id_7 [job_id_8 ...]     -> each id and its final status
    lss jobs [--status S] [--statistic S] [--limit N] [--after job_id_N]
    lss num-jobs / shutdown / status
    lss report --question Q [--state S]    -> every statistic as tables (or JSON, CSV;
                                              --years 2015-2020)
    lss plot --question Q --out FILE.svg   -> the states ranked, best and worst five marked
    lss bulk jobs.jsonl [--out answers.jsonl] [--format csv] [--priority N] [--deadline S]

This module owns the commands: parsing, talking to the broker through `Client` (a
`bulk` through `Client.outcomes`), exit codes and error messages. A failure is one line on
stderr (`lss: error: ...`) and a non-zero exit, never a traceback. What is printed is
shaped by `clients.render` (text, images) and `clients.tidy` (CSV).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TextIO, TypeVar

import zmq
from tqdm import tqdm

from clients import operations, render, tidy
from clients.client import Client
from clients.listing import job_number
from protocol import config
from protocol.errors import BrokerUnavailable, JobCancelled, JobFailed, LssError, UnknownJob
from protocol.fingerprint import is_standin
from protocol.logs import shown
from protocol.messages import (
    DEFAULT_PRIORITY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    STATE_STATISTICS,
    STATISTICS,
    JobStatus,
)
from protocol.names import question_vocabulary
from protocol.questions import QUESTIONS, question_list

Handler = Callable[[argparse.Namespace], int]
N = TypeVar("N", int, float)
BULK_WINDOW = 64
EXIT_JOBS_FAILED = config.EXIT_FAILURE
CLI_SETTINGS = ("endpoint", "timeout")  # the commands' own arguments are theirs alone
FORMATS = ("json", "csv")
REPORT_COLUMNS = ("statistic", *tidy.ANSWER_COLUMNS)
BULK_COLUMNS = ("line", "id", "statistic", "params", "status", "reason", *tidy.ANSWER_COLUMNS)


class UsageError(ValueError):
    """A request the command line refuses before asking the broker."""


# --- commands ---------------------------------------------------------------------


def cmd_questions(args: argparse.Namespace) -> int:
    listed = question_list()
    rows = [(entry["id"], entry["question"]) for entry in listed]
    print(json.dumps(listed, indent=2) if args.json else render.table(["id", "question"], rows))
    return config.EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    if args.format == "csv" and not args.wait:
        raise UsageError("--format csv needs --wait: a job id has no CSV")
    params = _params(args.statistic, args.question, args.state, args.param, args.years)
    with _client(args) as client:
        job_id = client.submit(
            args.statistic, priority=args.priority, deadline=args.deadline, **params
        )
        if not args.wait:
            _print_json(job_id, raw=True)
            return config.EXIT_OK
        answer = client.wait(job_id, args.timeout)
    _print_answer(answer, args.format)
    return config.EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as client:
        state = client.get(args.job_id)
    if args.format == "csv":
        sys.stdout.write(tidy.csv_text(tidy.rows(_done_answer(args.job_id, state))))
        return config.EXIT_OK
    _print_json(state)
    return config.EXIT_OK if state["status"] in UNFAILED else config.EXIT_FAILURE


UNFAILED = (JobStatus.RUNNING, JobStatus.DONE)
"""What `lss get` exits 0 for: a job that has or may still get an answer."""


def _done_answer(job_id: str, state: dict[str, Any]) -> dict[str, Any]:
    """A done job's answer; a failed, cancelled or unfinished one has none to write as CSV."""
    if state["status"] == JobStatus.ERROR:
        raise JobFailed(state.get("reason") or "no reason given")
    if state["status"] == JobStatus.CANCELLED:
        raise JobCancelled(job_id, state.get("reason") or "cancelled")
    if state["status"] != JobStatus.DONE:
        raise LssError(f"{job_id} is still {state['status']}: no answer yet (lss wait {job_id})")
    answer: dict[str, Any] = state["data"]
    return answer


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.wait(args.job_id, args.timeout)
    _print_answer(answer, args.format)
    return config.EXIT_OK


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel each job: prints its id and final status ("unknown" for an id the broker
    does not know, or another key's job); exits 1 when any is unknown."""
    unknown = 0
    with _client(args) as client:
        for job_id in args.job_ids:
            try:
                status = client.cancel(job_id)
            except UnknownJob:
                status, unknown = "unknown", unknown + 1
            print(f"{shown(job_id)} {status}", flush=True)
    if unknown:
        print(f"lss: {unknown} of {len(args.job_ids)} job id(s) unknown", file=sys.stderr)
        return config.EXIT_FAILURE
    return config.EXIT_OK


def cmd_jobs(args: argparse.Namespace) -> int:
    after = _after(args.after)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be positive")
    with _client(args) as client:
        listing = client.jobs(
            status=args.status, statistic=args.statistic, after=after, limit=args.limit
        )
    filtered = any(v is not None for v in (args.status, args.statistic, args.limit, args.after))
    print(json.dumps(listing) if args.json else render.jobs(listing, filtered))
    return config.EXIT_OK


def _after(text: str | None) -> int:
    """The job number of `--after` (a job id, or its number); 0 for none."""
    if text is None:
        return 0
    seq = job_number(text)
    if seq is None:
        raise UsageError(f"--after wants a job id such as job_id_7, got {text!r}")
    return seq


def cmd_num_jobs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.num_jobs())
    return config.EXIT_OK


def cmd_shutdown(args: argparse.Namespace) -> int:
    with _client(args) as client:
        pending = client.shutdown()
    print(f"shutting down: {pending} job(s) still to finish" if pending else "shutting down")
    return config.EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.prometheus:
            sys.stdout.write(_exposition(client))
            return config.EXIT_OK
        stats = client.stats()
    print(json.dumps(stats, indent=2) if args.json else render.status(stats))
    return config.EXIT_OK


def _exposition(client: Client) -> str:
    try:
        from clients.metrics import render as exposition
    except ImportError as exc:
        raise UsageError("--prometheus needs prometheus-client: the 'metrics' extra") from exc
    return exposition(client.stats)[0].decode()


def cmd_report(args: argparse.Namespace) -> int:
    names = [s for s in STATISTICS if args.state is not None or s not in STATE_STATISTICS]
    answers = _answers(args, names)
    if args.format == "csv":
        out = tidy.CsvRows(sys.stdout, REPORT_COLUMNS)
        for name, answer in answers.items():
            out.write({"statistic": name, **row} for row in tidy.rows(answer))
    elif args.format == "json":
        print(json.dumps(answers, indent=2))
    else:
        state = None if args.state is None else next(iter(answers["state_mean"]))  # data's name
        print(render.report(_title(args), answers, state, standin=_standin(args)))
    return config.EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError as exc:
        raise UsageError("plot needs matplotlib: pip install 'le-stats-sportif[plot]'") from exc
    try:
        render.plot_format(args.out)  # refused before any job runs
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    answers = _answers(args, ["states_mean", "global_mean", "best5", "worst5"])
    render.plot_states(
        _title(args), answers, args.out, dpi=args.dpi, standin=_standin(args), years=args.years
    )
    print(f"wrote {args.out} ({len(answers['states_mean'])} locations)", file=sys.stderr)
    return config.EXIT_OK


def cmd_bulk(args: argparse.Namespace) -> int:
    jobs = list(_read_bulk(args.file))
    with _output(args.out) as out:
        failed = _run_bulk(args, jobs, out)
    if failed:
        print(
            f"lss: {failed} of {len(jobs)} job(s) failed or were cancelled "
            '(see "reason" in the output)',
            file=sys.stderr,
        )
        return EXIT_JOBS_FAILED
    return config.EXIT_OK


# --- helpers ----------------------------------------------------------------------


def _client(args: argparse.Namespace) -> Client:
    return Client(args.endpoint, timeout=args.timeout)


def _print_json(value: Any, raw: bool = False) -> None:
    print(value if raw else json.dumps(value, indent=2))


def _print_answer(answer: dict[str, Any], output_format: str) -> None:
    if output_format == "csv":
        sys.stdout.write(tidy.csv_text(tidy.rows(answer)))
    else:
        _print_json(answer)


def _params(
    statistic: str,
    question: str | None,
    state: str | None,
    extra: Sequence[str],
    years: tuple[int, int] | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if question is not None:
        params["question"] = question
    if state is not None:
        params["state"] = state
    if years is not None:
        params["years"] = list(years)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param wants KEY=VALUE, got {item!r}")
        params[key] = value
    if statistic in STATE_STATISTICS and state is None:
        raise UsageError(f"{statistic} needs --state")
    return params


def _answers(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """Run the statistics `names` for the question (and state), all at once."""
    state = getattr(args, "state", None)
    years = getattr(args, "years", None)
    jobs = [
        (name, _params(name, args.question, _state_for(name, state), [], years)) for name in names
    ]
    with _client(args) as client:
        client.ping()  # an unreachable broker is named as such, not as a job timeout
        return dict(zip(names, client.map(jobs), strict=True))


def _standin(args: argparse.Namespace) -> bool:
    """Whether the service answers from the generated stand-in data (then labelled so)."""
    with _client(args) as client:
        return is_standin(client.stats().get("fingerprint"))


def _title(args: argparse.Namespace) -> str:
    """The question's full text (as the workers will resolve it), and the years if given."""
    text = question_vocabulary(QUESTIONS).resolve(args.question) or args.question
    return text if args.years is None else f"{text} ({args.years[0]}-{args.years[1]})"


def _years(text: str) -> tuple[int, int]:
    """`--years FIRST-LAST` (or one year) as (FIRST, LAST); the workers check the range."""
    first, sep, last = text.partition("-")
    try:
        return int(first), int(last if sep else first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"want FIRST-LAST, e.g. 2015-2020; got {text!r}") from None


def _state_for(statistic: str, state: str | None) -> str | None:
    return state if statistic in STATE_STATISTICS else None


def _read_bulk(path: str) -> Iterator[dict[str, Any]]:
    """Jobs from JSON lines: {"statistic": S, "question": Q, ...} or {"statistic": S, "params": {}}.

    An optional "id" is echoed in the output; a malformed line stops `bulk` before any job runs.
    """
    with _input(path) as lines:
        for number, line in enumerate(lines, 1):
            if line.strip():
                yield _bulk_job(number, line)


def _bulk_job(number: int, line: str) -> dict[str, Any]:
    try:
        job = json.loads(line, parse_constant=_not_json)
    except ValueError as exc:
        raise UsageError(f"line {number}: not JSON ({exc})") from exc
    if not isinstance(job, dict) or not isinstance(job.get("statistic"), str):
        raise UsageError(f'line {number}: want an object with a "statistic" string')
    params = job.get("params", {k: v for k, v in job.items() if k not in ("statistic", "id")})
    if not isinstance(params, dict):
        raise UsageError(f'line {number}: "params" must be an object')
    record = {"line": number, "statistic": job["statistic"], "params": params}
    if "id" in job:
        record["id"] = job["id"]
    return record


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity, which JSON has not (nor the service takes)."""
    raise ValueError(f"{constant} is not JSON")


def _run_bulk(args: argparse.Namespace, jobs: list[dict[str, Any]], out: TextIO) -> int:
    """Run `jobs` with up to `--window` in flight; write results in input order; count failures."""
    failed = 0
    progress = tqdm(
        total=len(jobs), unit="job", file=sys.stderr, disable=args.hide_progress, dynamic_ncols=True
    )
    with _client(args) as client:
        client.ping()  # an unreachable broker fails `bulk` at once, not job by job
        pairs = ((job["statistic"], job["params"]) for job in jobs)
        write = _bulk_writer(args.format, out)
        states = client.outcomes(pairs, args.window, priority=args.priority, deadline=args.deadline)
        for job, state in zip(jobs, states, strict=True):
            failed += state["status"] != "done"
            write(job, state)
            progress.update()
            progress.set_postfix(failed=failed, refresh=False)
    progress.close()
    return failed


def _bulk_writer(
    output_format: str, out: TextIO
) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Writes one job's outcome: a JSON line, or CSV rows (one per number of its answer,
    one with empty answer columns for a failed job or an empty answer)."""
    if output_format == "json":
        return lambda job, state: _write_line(out, json.dumps({**job, **state}))
    csv_out = tidy.CsvRows(out, BULK_COLUMNS)

    def write(job: dict[str, Any], state: dict[str, Any]) -> None:
        fields = {
            **job,
            "params": json.dumps(job["params"], ensure_ascii=False),
            "status": state["status"],
            "reason": state.get("reason", ""),
        }
        rows = tidy.rows(state["data"]) if state["status"] == JobStatus.DONE else []
        csv_out.write({**fields, **row} for row in rows or [{}])

    return write


def _write_line(out: TextIO, line: str) -> None:
    out.write(line + "\n")


def _input(path: str) -> AbstractContextManager[TextIO]:
    return nullcontext(sys.stdin) if path == "-" else open(path, encoding="utf-8")


def _output(path: str | None) -> AbstractContextManager[TextIO]:
    return nullcontext(sys.stdout) if path in (None, "-") else open(path, "w", encoding="utf-8")


# --- parser and main ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lss", description="Talk to a Le Stats Sportif service.")
    config.add_flags(parser, CLI_SETTINGS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    adders = (
        _add_questions,
        _add_submit,
        _add_reads,
        _add_admin,
        _add_report,
        _add_plot,
        _add_bulk,
    )
    for add in adders:
        add(commands)
    return parser


def _command(commands: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(name, help=help_text, description=help_text)
    sub.set_defaults(handler=handler)
    return sub


def _question_flags(sub: argparse.ArgumentParser, question_required: bool = True) -> None:
    sub.add_argument(
        "--question",
        required=question_required,
        help="the question: its short id (lss questions) or its full text, in any case",
    )
    sub.add_argument(
        "--state",
        help="a location for the per-state statistics: its name in any case or its USPS code",
    )
    _years_flag(sub)


def _years_flag(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--years",
        type=_years,
        metavar="FIRST-LAST",
        help="count only the rows of these years, both included, within 2011-2022 "
        "(default: every year)",
    )


def _add_questions(commands: Any) -> None:
    sub = _command(
        commands, "questions", cmd_questions, "the questions, with the short ids jobs take"
    )
    sub.add_argument("--json", action="store_true", help="as a JSON list")


def _add_submit(commands: Any) -> None:
    sub = _command(commands, "submit", cmd_submit, "create a job; prints its id")
    sub.add_argument("statistic", choices=STATISTICS)
    _question_flags(sub, question_required=False)
    sub.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another parameter (the workers reject unexpected ones)",
    )
    sub.add_argument("--wait", action="store_true", help="wait, and print the answer instead")
    _format_flag(sub, "with --wait: the answer as JSON or CSV")
    _scheduling_flags(sub, "the job")


def _scheduling_flags(sub: argparse.ArgumentParser, jobs: str) -> None:
    sub.add_argument(
        "--priority",
        type=_priority,
        default=DEFAULT_PRIORITY,
        metavar="N",
        help=f"{jobs}'s place among this run's own jobs: {MIN_PRIORITY} first .. "
        f"{MAX_PRIORITY} last (default {DEFAULT_PRIORITY}); other producers keep their share",
    )
    sub.add_argument(
        "--deadline",
        type=_deadline,
        metavar="SECONDS",
        help=f"{jobs} must start within this many seconds, or never runs (it ends "
        '"cancelled", reason "deadline passed"); default: no deadline',
    )


def _priority(text: str) -> int:
    try:
        return operations.scheduling(priority=_number(text, int)).priority
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _deadline(text: str) -> float:
    seconds = _number(text, float)
    try:
        operations.scheduling(deadline=seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds


def _number(text: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"want {what}, got {text!r}") from None


def _add_reads(commands: Any) -> None:
    get_help = "a job's status (and answer) as JSON; exits 1 when it failed or was cancelled"
    get = _command(commands, "get", cmd_get, get_help)
    get.add_argument("job_id")
    _format_flag(get, "the job's state as JSON, or a done job's answer as CSV")
    wait = _command(commands, "wait", cmd_wait, "wait for a job; print its answer")
    wait.add_argument("job_id")
    _format_flag(wait, "the answer as JSON or CSV")
    cancel_help = "cancel jobs; prints each id and its final status; exits 1 if any is unknown"
    cancel = _command(commands, "cancel", cmd_cancel, cancel_help)
    cancel.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    sub = _command(commands, "jobs", cmd_jobs, "jobs with their status, oldest first")
    sub.add_argument("--json", action="store_true", help="as a JSON object")
    sub.add_argument("--status", choices=[s.value for s in JobStatus], help="only jobs in it")
    sub.add_argument("--statistic", help="only jobs of this statistic")
    sub.add_argument("--limit", type=int, help="at most this many jobs (default: all)")
    sub.add_argument("--after", metavar="JOB_ID", help="only jobs submitted after this one")
    _command(commands, "num-jobs", cmd_num_jobs, "how many jobs are not finished yet")


def _add_admin(commands: Any) -> None:
    _command(
        commands, "shutdown", cmd_shutdown, "graceful shutdown: finish accepted jobs, then stop"
    )
    sub = _command(
        commands, "status", cmd_status, "workers, queue depth, jobs by status, throughput"
    )
    group = sub.add_mutually_exclusive_group()
    group.add_argument("--json", action="store_true", help="the raw stats as JSON")
    group.add_argument("--prometheus", action="store_true", help="Prometheus text format")


def _add_report(commands: Any) -> None:
    sub = _command(
        commands, "report", cmd_report, "every statistic for a question (and a state) as tables"
    )
    _question_flags(sub)
    _format_flag(sub, "the answers as one JSON object, or CSV (default: tables)", default=None)
    sub.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )


def _add_plot(commands: Any) -> None:
    sub = _command(
        commands, "plot", cmd_plot, "an image of the states ranked by mean for a question"
    )
    sub.add_argument(
        "--question", required=True, help="the question: its short id or full text, any case"
    )
    _years_flag(sub)
    sub.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the file to write: NAME.svg (SVG) or NAME.png (PNG)",
    )
    sub.add_argument("--dpi", type=int, default=120)


def _add_bulk(commands: Any) -> None:
    sub = _command(
        commands,
        "bulk",
        cmd_bulk,
        "run the jobs of a JSON-lines file; write answers as JSON lines (or CSV)",
    )
    _format_flag(sub, "JSON lines, one a job; or CSV, one row per number")
    sub.add_argument(
        "file", help='input, "-" for stdin: one {"statistic": ..., "question": ..., ...} a line'
    )
    sub.add_argument("--out", help="output file (default: stdout)")
    sub.add_argument("--window", type=int, default=BULK_WINDOW, help="jobs in flight at once")
    _scheduling_flags(sub, "each job")
    bar = sub.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="hide_progress",
        action="store_false",
        default=None,
        help="show the progress bar even when stderr is not a terminal (default: only on one)",
    )
    bar.add_argument("--no-progress", dest="hide_progress", action="store_true")


def _format_flag(
    sub: argparse.ArgumentParser, help_text: str, default: str | None = "json"
) -> None:
    sub.add_argument("--format", choices=FORMATS, default=default, help=help_text)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.timeout <= 0 or getattr(args, "window", 1) < 1:
        print("lss: error: --timeout and --window must be positive", file=sys.stderr)
        return config.EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("lss: interrupted", file=sys.stderr)
        return config.EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet exit flush
        return config.EXIT_FAILURE
    except (LssError, OSError, ValueError, zmq.ZMQError) as exc:
        print(f"lss: error: {_one_line(exc)}", file=sys.stderr)
        return config.EXIT_USAGE if isinstance(exc, UsageError) else config.EXIT_FAILURE
    except Exception as exc:  # a bug: still one line, not a traceback
        print(f"lss: internal error: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return config.EXIT_FAILURE


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, JobFailed):
        text = f"the job failed: {text}"
    elif isinstance(exc, zmq.ZMQError):
        text = f"cannot use the endpoint: {text}"
    if isinstance(exc, BrokerUnavailable):
        text += " (is the service running? see --endpoint / LSS_CLIENT_ENDPOINT)"
    return text


if __name__ == "__main__":
    sys.exit(main())
