"""The dashboard: in a real headless browser against the real service, and its data routes.

The browser test follows a first visit: the live list of workers, the map of the first
question once its jobs are answered, a state picked with the keyboard, a worker killed
while the page is open. Numbers on the page are checked against the `Client`'s answers
for the same jobs (the page shows their ids). Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.harness import Service
from bench.reference import close_enough
from bench.service import wait_until
from broker.store import Outcome, SqliteStore
from clients.http.dashboard import ASSETS
from protocol import config
from protocol import messages as m
from protocol.messages import STATISTICS, JobStatus
from protocol.questions import QUESTIONS
from tests.integration import browser
from tests.integration.gateway_http import Http

pytestmark = pytest.mark.integration

LOCATIONS = 55  # 50 states, DC, National, Guam, Puerto Rico, Virgin Islands
HEARTBEAT_WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS
PAGE_POLL_S = 1.0  # the page asks for the live data this often (dashboard.js)
NARROW_PX, WIDE_PX = 400, 1400  # a phone, a laptop
NO_SIDEWAYS_SCROLL = "return document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    reason = browser.missing()
    if reason:
        pytest.skip(reason)
    chrome = browser.start(tmp_path / "chromium-profile")
    try:
        yield chrome
    finally:
        chrome.quit()


def workers_shown(driver: Any, gone: bool = False) -> set[str]:
    """The workers listed as live (or as gone), read in one script: the rows are redrawn
    every second, so element handles would go stale between two reads."""
    script = "return [...document.querySelectorAll(arguments[0])].map(r => r.dataset.worker)"
    return set(driver.execute_script(script, f"#workers tbody tr[data-gone='{str(gone).lower()}']"))


def tile_values(driver: Any) -> dict[str, float]:
    tiles = driver.find_elements("css selector", ".tile")
    assert len(tiles) == LOCATIONS
    values = {t.get_attribute("data-name"): t.get_attribute("data-value") for t in tiles}
    return {name: float(value) for name, value in values.items() if value}


def shown(driver: Any, element_id: str) -> tuple[float, str]:
    """An element's full-precision number and the job it came from."""
    element = driver.find_element("id", element_id)
    return float(element.get_attribute("data-value")), element.get_attribute("data-job")


def marked(driver: Any, kind: str) -> set[str]:
    tiles = driver.find_elements("css selector", f".tile.{kind}")
    return {tile.get_attribute("data-name") for tile in tiles}


# Routes of a newer service that the page asks for, and does without when an older one
# answers 404 or 405 (GET /api/questions meets the POST-only /api/<statistic>).
OPTIONAL_ROUTES = ("/api/questions", "/api/state_trend")
MISSING_ROUTE = (404, 405)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not _optional_route_missing(entry["message"])
    ]


def _optional_route_missing(message: str) -> bool:
    missing = any(f"status of {status}" in message for status in MISSING_ROUTE)
    return missing and any(route in message for route in OPTIONAL_ROUTES)


def test_the_dashboard_in_a_browser(
    service: Service, gateway_for: Callable[..., Http], driver: Any, tmp_path: Path
) -> None:
    http = gateway_for(service)
    with service.client() as client:
        names = {w["id"] for w in client.stats()["workers"]}
        started = time.monotonic()
        driver.get(http.base + "/")
        wait_until(lambda: workers_shown(driver) == names or None, 20, f"workers {names} listed")
        wait_until(lambda: len(tile_values(driver)) == LOCATIONS or None, 60, "the map")
        map_s = time.monotonic() - started
        assert driver.find_element("id", "standin-banner").is_displayed()
        assert driver.find_element("id", "question").get_attribute("value") == QUESTIONS[0]
        assert driver.find_element("id", "jobs-cancelled").text == "0"
        assert driver.find_elements("css selector", "#producers tbody tr")  # painted
        map_job = driver.find_element("id", "map").get_attribute("data-job")
        assert tile_values(driver) == client.wait(map_job)  # the very numbers of that job
        assert close_enough(tile_values(driver), client.states_mean(QUESTIONS[0]))
        assert marked(driver, "best") == set(client.best5(QUESTIONS[0]))
        assert marked(driver, "worst") == set(client.worst5(QUESTIONS[0]))
        driver.find_element("id", "explorer").screenshot(str(tmp_path / "explorer.png"))
        check_the_table_sorts(driver)

        pick_with_keyboard(driver, "Ohio", "Pennsylvania")
        check_state_detail(driver, client, "Pennsylvania")
        driver.find_element("id", "explorer").screenshot(str(tmp_path / "state.png"))
        driver.find_element("id", "live").screenshot(str(tmp_path / "live.png"))
        driver.save_screenshot(str(tmp_path / "page.png"))

        victim = service.workers[0]
        victim_name = next(w["id"] for w in client.stats()["workers"] if w["pid"] == victim.pid)
        victim.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: victim_name not in workers_shown(driver) or None,
            HEARTBEAT_WINDOW_S + PAGE_POLL_S + 1.0,
            f"{victim_name} to leave the live list",
        )
        assert victim_name in workers_shown(driver, gone=True), "shown greyed out, as gone"
        driver.find_element("id", "live").screenshot(str(tmp_path / "live-after-kill.png"))
    assert console_errors(driver) == []
    print(f"map shown {map_s:.2f} s after opening; worker gone from the list after "
          f"{time.monotonic() - killed:.2f} s; screenshots in {tmp_path}")  # fmt: skip


def test_the_dashboard_after_hostile_jobs_at_400_px(
    service: Service, gateway_for: Callable[..., Http], driver: Any, tmp_path: Path
) -> None:
    """Jobs with non-finite numbers (one stored as an older broker did), markup, 4 KB
    strings and deep nesting: the live panels still render, as text, on a page 400 px wide
    that does not scroll sideways; the table downloads as CSV; the year range and the
    picked state's trend, or the notes that this service has neither."""
    http = gateway_for(service)
    stored = store_hostile_failure(service)
    accepted = [job for job in map(submit_raw, [http] * 4, hostile_bodies()) if job]
    for job in accepted:
        assert http.poll(job)["status"] == "error"
    status, live = http.get("/api/dashboard/live")
    assert status == 200 and live["up"], live
    json.dumps(live, allow_nan=False)  # no NaN or Infinity came through
    driver.set_window_size(NARROW_PX, 1000)
    driver.get(http.base + "/")
    assert driver.execute_script("return window.innerWidth") == NARROW_PX
    wanted = {stored, *accepted}
    wait_until(lambda: wanted <= failures_shown(driver) or None, 20, f"failures {wanted} listed")
    wait_until(lambda: len(tile_values(driver)) == LOCATIONS or None, 60, "the map")
    assert "x=null, y=null, z=null" in driver.find_element("id", "failures").text
    assert driver.find_elements("css selector", "#live img, #live script") == []
    assert driver.find_element("id", "queue-depth").text.isdigit()
    check_the_csv_download(driver, tmp_path / "downloads")
    check_years_and_trend(driver, http, service, "Ohio")
    assert driver.execute_script(NO_SIDEWAYS_SCROLL), "the page scrolls sideways at 400 px"
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(tmp_path / "narrow.png"))
    driver.set_window_size(WIDE_PX, 1000)
    driver.save_screenshot(str(tmp_path / "wide.png"))
    assert console_errors(driver) == []
    print(f"screenshots in {tmp_path}")


def store_hostile_failure(service: Service) -> str:
    """A failed job whose parameters hold NaN and infinities, written into the broker's
    store while it is down (as an older broker admitted them); the job's id."""
    service.kill_broker()  # its workers stay, and reconnect to the next one
    params = {"question": QUESTIONS[0], "state": "Ohio", "x": math.inf, "y": math.nan,
              "z": -math.inf}  # fmt: skip
    store = SqliteStore(service.state_dir / "jobs.sqlite3")
    try:
        seq, _ = store.add("hostile-stored", m.body_of(m.Job("state_mean", params)), time.time())
        store.finish(seq, Outcome(JobStatus.ERROR, reason="unexpected x, y, z"), time.time())
        store.commit()
    finally:
        store.close()
    service.start_broker()
    return m.job_id(seq)


def hostile_bodies() -> list[bytes]:
    """Submits as raw JSON text (1e400 is a number that Python reads as infinity)."""
    question = json.dumps(QUESTIONS[0])
    markup = json.dumps("<img src=x onerror=alert(1)><script>alert(2)</script>")
    texts = (
        f'{{"question": {question}, "state": "Ohio", "x": 1e400}}',
        f'{{"question": {question}, "state": {markup}}}',
        f'{{"question": {question}, "state": "{"A" * 4096}"}}',
        f'{{"question": {question}, "state": "Ohio", "deep": {"[" * 30}1{"]" * 30}}}',
    )
    return [text.encode() for text in texts]


def submit_raw(http: Http, body: bytes) -> str | None:
    """The job's id, or None if the gateway or the broker refused it (with a reason)."""
    status, reply = http.call("POST", "/api/state_mean", body)
    if status == 200:
        job: str = reply["job_id"]
        return job
    assert 400 <= status < 500 and reply["reason"], (status, reply)
    return None


def attribute(driver: Any, selector: str, name: str) -> str | None:
    """An attribute of the first element that `selector` finds, or None."""
    found = driver.find_elements("css selector", selector)
    return found[0].get_attribute(name) if found else None


def failures_shown(driver: Any) -> set[str]:
    return set(driver.execute_script(
        "return [...document.querySelectorAll('#failures tbody a')].map(a => a.textContent)"
    ))  # fmt: skip


def check_the_csv_download(driver: Any, downloads: Path) -> None:
    """The file holds the table's rows in its order, means at full precision; fields
    with commas, quotes, line breaks or edge spaces are quoted."""
    downloads.mkdir()
    driver.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.find_element("id", "csv-download").click()
    path = wait_until(lambda: next(downloads.glob("lss-*.csv"), None), 10, "the CSV file")
    with path.open(newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))
    assert header == ["location", "mean_percent", "rank", "question", "years"]
    values = tile_values(driver)
    assert [row[0] for row in rows] == sorted(values, key=values.__getitem__)  # the table's order
    assert {row[0]: float(row[1]) for row in rows} == values
    assert sorted(int(row[2]) for row in rows) == list(range(1, LOCATIONS + 1))
    assert {(row[3], row[4]) for row in rows} == {(QUESTIONS[0], "all")}
    fields = ["a,b", 'say "hi"', "two\nlines", " edge ", "plain", ""]
    text = driver.execute_script("return csvText([arguments[0]])", fields)
    assert list(csv.reader(io.StringIO(text, newline=""))) == [fields]


def check_years_and_trend(driver: Any, http: Http, service: Service, state: str) -> None:
    """With a service that has `years` and `state_trend`: the picked range goes into the
    page's jobs, and the state's trend is the one its job answered. Without (GET
    /api/questions missing): the range is disabled and the detail says there is no trend."""
    from selenium.webdriver.support.select import Select

    newer = http.get("/api/questions")[0] not in MISSING_ROUTE
    assert driver.find_element("id", "year-first").is_enabled() == newer
    if newer:
        map_job = driver.find_element("id", "map").get_attribute("data-job")
        Select(driver.find_element("id", "year-first")).select_by_value("2015")
        Select(driver.find_element("id", "year-last")).select_by_value("2020")
        wait_until(
            lambda: attribute(driver, "#map", "data-job") != map_job or None, 30, "a new map"
        )
    driver.find_element("css selector", f".tile[data-name='{state}']").click()
    ready = "#state-trend[data-ready='true']"
    wait_until(lambda: attribute(driver, ready, "data-ready"), 30, f"{state}'s trend")
    trend = driver.find_element("css selector", ready)
    if not newer:
        assert "no state_trend" in trend.text
        return
    with service.client() as client:
        answer = client.wait(trend.get_attribute("data-job"))[state]
        years = {j["job_id"]: j["params"].get("years") for j in client.recent(15)["jobs"]}
    assert json.loads(trend.get_attribute("data-points")) == [
        [int(y), v] for y, v in answer.items()
    ]
    assert set(map(int, answer)) <= set(range(2015, 2021))
    assert str(years[trend.get_attribute("data-job")]) == "[2015, 2020]"  # RECENT: a list's repr


def check_the_table_sorts(driver: Any) -> None:
    """The map's text alternative: every location, sorted by the heading clicked."""
    script = (
        "return [...document.querySelectorAll('#states-table tbody tr')].map(r => r.dataset.name)"
    )
    by_mean = driver.execute_script(script)
    values = tile_values(driver)
    assert by_mean == sorted(values, key=values.__getitem__)  # the default: mean, ascending
    driver.find_element("css selector", "#states-table button[data-key='name']").click()
    assert driver.execute_script(script) == sorted(values)
    heading = driver.find_element("css selector", "#states-table th[aria-sort='ascending']")
    assert heading.text.startswith("Location")


def pick_with_keyboard(driver: Any, start: str, right_of_start: str) -> None:
    """Click `start`, then move right with the arrow key and pick with Enter."""
    from selenium.webdriver.common.keys import Keys

    driver.find_element("css selector", f".tile[data-name='{start}']").click()
    driver.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    focused = driver.switch_to.active_element
    assert focused.get_attribute("data-name") == right_of_start
    focused.send_keys(Keys.ENTER)
    wait_until(
        lambda: (
            (
                driver.find_element("id", "state-detail").get_attribute("data-ready") == "true"
                and driver.find_element("css selector", "#state-detail h3").text == right_of_start
            )
            or None
        ),
        30,
        f"{right_of_start}'s numbers",
    )


def check_state_detail(driver: Any, client: Any, state: str) -> None:
    mean, mean_job = shown(driver, "state-mean")
    assert {state: mean} == client.wait(mean_job)
    diff, diff_job = shown(driver, "state-diff")
    assert {state: diff} == client.wait(diff_job)
    table = driver.find_element("id", "state-categories")
    rows = table.find_elements("css selector", "tr[data-key]")
    groups = {r.get_attribute("data-key"): float(r.get_attribute("data-value")) for r in rows}
    assert {state: groups} == client.wait(table.get_attribute("data-job"))
    question = driver.find_element("id", "question").get_attribute("value")
    assert close_enough({state: mean}, client.state_mean(question, state))


def test_recent_jobs_and_failures_come_from_the_store_and_survive_a_restart(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    with service.client() as client:
        done = client.submit("global_mean", question=QUESTIONS[0])
        failed = client.submit("state_mean", question=QUESTIONS[0], state="Atlantis")
        client.wait(done)
        wait_until(lambda: client.get(failed)["status"] == "error" or None, 20, "the failure")
    broker = service.broker
    assert broker is not None
    broker.send_signal(signal.SIGTERM)  # a clean stop: every outcome is committed
    assert broker.wait(timeout=30) == 0
    service.start_broker()
    status, live = http.get("/api/dashboard/live")
    assert status == 200, live
    assert [j["job_id"] for j in live["recent"]] == [failed, done]
    assert live["recent"][1]["params"] == {"question": QUESTIONS[0]}
    assert [(j["job_id"], j["statistic"]) for j in live["failures"]] == [(failed, "state_mean")]
    assert "no data for state" in live["failures"][0]["reason"]
    assert live["standin"] is True


def test_metrics_histograms_count_the_jobs_run(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    runs = {"best5": 3, "global_mean": 2, "state_mean": 4}
    with service.client() as client:
        for _ in range(runs["best5"]):
            client.best5(QUESTIONS[1])
        for _ in range(runs["global_mean"]):
            client.global_mean(QUESTIONS[1])
        for _ in range(runs["state_mean"]):
            client.state_mean(QUESTIONS[1], "Ohio")
    status, text = http.get("/metrics")
    assert status == 200
    for phase in ("queue_wait", "compute", "end_to_end"):
        pattern = rf'^lss_job_{phase}_seconds_count{{statistic="(\w+)"}} (\S+)$'
        counts = dict(re.findall(pattern, text, re.MULTILINE))
        assert {s: int(float(n)) for s, n in counts.items()} == runs, phase
    assert set(runs) <= set(STATISTICS)
    status, live = http.get("/api/dashboard/live")
    assert {s: cells["end_to_end"]["count"] for s, cells in live["latency"].items()} == runs
    assert all(cells["compute"]["p50_ms"] > 0 for cells in live["latency"].values())


@pytest.mark.shares_service
def test_the_page_and_its_assets_stay_small_and_self_contained(
    service: Service, gateway_for: Callable[..., Http]
) -> None:
    http = gateway_for(service)
    status, page = http.get("/")
    assert status == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
    assert sorted(assets) == [f"/static/{name}" for name in sorted(ASSETS)]
    total = len(page.encode()) + sum(len(http.get(a)[1].encode()) for a in assets)
    assert total < 300_000
    assert "http://" not in page and "https://" not in page  # no CDN
    assert http.get("/static/../gateway.py")[0] == 404
    assert http.get("/static/index.html")[0] == 404


@pytest.mark.shares_service
def test_standin_answers_are_labelled_in_the_command_line(service: Service, tmp_path: Path) -> None:
    from clients.render import STANDIN_NOTE
    from tests.integration.test_cli import lss, ok

    assert STANDIN_NOTE in ok(lss(service, "status"))
    report = ok(lss(service, "report", "--question", QUESTIONS[0]))
    assert report.startswith(STANDIN_NOTE.upper())
    png = tmp_path / "plot.png"
    ok(lss(service, "plot", "--question", QUESTIONS[0], "--out", str(png)))
    assert STANDIN_NOTE.encode() in png.read_bytes()  # in the PNG's text, besides the title
