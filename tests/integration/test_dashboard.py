"""The dashboard: in a real headless browser against the real service, and its data routes.

The browser test follows a first visit: the live list of workers, the map of the first
question once its jobs are answered, a state picked with the keyboard, a worker killed
while the page is open. Numbers on the page are checked against the `Client`'s answers
for the same jobs (the page shows their ids). Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

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
from clients.http.dashboard import ASSETS
from protocol import config
from protocol.messages import STATISTICS
from protocol.questions import QUESTIONS
from tests.integration import browser
from tests.integration.gateway_http import Http

pytestmark = pytest.mark.integration

LOCATIONS = 55  # 50 states, DC, National, Guam, Puerto Rico, Virgin Islands
HEARTBEAT_WINDOW_S = config.HEARTBEAT_INTERVAL_MS / 1000 * config.HEARTBEAT_LIVENESS
PAGE_POLL_S = 1.0  # the page asks for the live data this often (dashboard.js)


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


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


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


def test_standin_answers_are_labelled_in_the_command_line(service: Service, tmp_path: Path) -> None:
    from clients.render import STANDIN_NOTE
    from tests.integration.test_cli import lss, ok

    assert STANDIN_NOTE in ok(lss(service, "status"))
    report = ok(lss(service, "report", "--question", QUESTIONS[0]))
    assert report.startswith(STANDIN_NOTE.upper())
    png = tmp_path / "plot.png"
    ok(lss(service, "plot", "--question", QUESTIONS[0], "--out", str(png)))
    assert STANDIN_NOTE.encode() in png.read_bytes()  # in the PNG's text, besides the title
