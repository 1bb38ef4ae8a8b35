"""The ``otelflow ui`` page in headless Chromium, as a user uses it: the runs list and its filters, a failed run,
its folded map, its failed task's traceback and logs, a running flow finishing while the page is open, hostile
data shown as text, a damaged spool. The README's screenshot is taken here too.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from playwright.sync_api import expect
from test_cli import start_slow_flow, stop
from ui_scenarios import HOSTILE, HOSTILE_SCRIPT
from ui_server import get_json, serving

pytestmark = pytest.mark.slow

STATIC = REPO_ROOT / "otelflow" / "_internal" / "ui" / "static"
SCREENSHOT = REPO_ROOT / "docs" / "images" / "ui-run.png"
TIMEOUT = 30_000  # ms: how long the page may take to show what a step waits for (a bound, not a measurement)


@pytest.fixture(scope="module")
def home(ui_home: Path) -> Path:
    return ui_home


@pytest.fixture(scope="module")
def url(ui_url: str) -> str:
    return ui_url


def runs_shown(page: Any) -> list[tuple[str, str]]:
    """(flow run id, state) of each row of the runs table."""
    return [(row.get_attribute("data-run-id"), row.get_attribute("data-state"))
            for row in page.locator("tr.run").all()]


def test_from_the_runs_list_to_a_failed_tasks_traceback_and_logs(page: Any, url: str) -> None:
    runs = {r["flow"]: r for r in get_json(f"{url}/api/runs")["runs"]}
    page.goto(url + "/")
    page.wait_for_selector("tr.run")
    assert len(runs_shown(page)) == 4

    # filter to the failed run: the list and the address say so
    page.select_option("#filter-state", "Failed")
    expect(page.locator("tr.run")).to_have_count(1, timeout=TIMEOUT)
    assert runs_shown(page) == [(runs["failing"]["flow_run_id"], "Failed")]
    assert "state=Failed" in page.url

    # open it
    page.click(f"tr.run[data-run-id='{runs['failing']['flow_run_id']}'] a.run-link")
    page.wait_for_selector("#waterfall .wf-row")
    assert page.url.endswith(f"/runs/{runs['failing']['flow_run_id']}")
    header = page.locator("#run-header")
    assert header.locator("[data-field=state]").inner_text().strip() == "Failed"
    assert runs["failing"]["flow_run_name"] in header.inner_text()
    assert page.locator("#show-command").inner_text().strip() == f"otelflow show {runs['failing']['flow_run_id']}"

    # the mapped runs are one row; expanded, six, one of them Failed after a retry
    group = page.locator(".wf-row[data-kind=group]")
    assert group.count() == 1 and "square" in group.inner_text()
    before = page.locator(".wf-row[data-kind=run]").count()
    group.locator(".wf-expand").click()
    expect(page.locator(".wf-row[data-kind=run]")).to_have_count(before + 6, timeout=TIMEOUT)
    squares = page.locator(".wf-row[data-kind=run]", has_text="square-")
    assert squares.count() == 6
    assert page.locator(".wf-row[data-kind=run][data-state=Failed]", has_text="square-").count() == 1
    # NotReady shows which upstream run failed
    after = page.locator(".wf-row[data-state=NotReady]")
    assert "boom-" in after.inner_text()

    # the failed task: its exception, traceback and logs
    page.locator(".wf-row[data-kind=run][data-state=Failed]", has_text="boom-").click()
    detail = page.locator("#run-detail")
    detail.locator(".exception").wait_for(timeout=TIMEOUT)
    assert "ValueError" in detail.locator(".exception").inner_text()
    assert "bad input 1" in detail.locator(".exception").inner_text()
    assert 'raise ValueError(f"bad input {x}")' in detail.locator("pre.traceback").inner_text()
    assert any("bad input 1" in line for line in detail.locator(".detail-logs .log-line").all_inner_texts())

    # the run's logs panel: every line, filtered by level
    logs = page.locator("#logs .log-line")
    logs.first.wait_for(timeout=TIMEOUT)
    assert any("about to fail" in line for line in logs.all_inner_texts())
    page.select_option("#log-level", "error")
    expect(page.locator("#logs .log-line[data-level=warning]")).to_have_count(0, timeout=TIMEOUT)
    expect(page.locator("#logs .log-line[data-level=info]")).to_have_count(0, timeout=TIMEOUT)
    levels = {line.get_attribute("data-level") for line in logs.all()}
    assert levels == {"error"}, levels
    assert not any("about to fail" in line for line in logs.all_inner_texts())


def test_a_running_flow_finishes_on_the_open_page(page: Any, tmp_path: Path) -> None:
    go = tmp_path / "go"
    flow_proc = start_slow_flow(tmp_path, go)
    try:
        with serving(tmp_path) as url:
            page.goto(url + "/")
            page.wait_for_selector("tr.run[data-state=Running]", timeout=60_000)  # appears while the list is open
            page.click("tr.run[data-state=Running] a.run-link")
            page.wait_for_selector(".wf-row[data-state=Running]", timeout=TIMEOUT)
            assert page.locator("#run-header [data-field=state]").inner_text().strip() == "Running"
            page.wait_for_selector(".wf-row[data-kind=run]:has-text('wait_for_go')", timeout=60_000)
            page.evaluate("window.__same_page = true")
            go.touch()
            assert flow_proc.wait(timeout=60) == 0
            expect(page.locator("#run-header [data-field=state]")).to_have_text("Completed", timeout=60_000)
            page.wait_for_selector(".wf-row[data-kind=run][data-state=Completed]:has-text('wait_for_go')",
                                   timeout=TIMEOUT)
            page.locator("#logs .log-line", has_text="slow flow done").wait_for(timeout=TIMEOUT)
            assert page.evaluate("window.__same_page") is True  # updated in place, not reloaded
            assert page.locator(".wf-row[data-state=Running]").count() == 0
    finally:
        go.touch()
        stop(flow_proc)


def test_hostile_names_messages_exceptions_and_artifacts_are_text(page: Any, url: str) -> None:
    runs = {r["flow"]: r for r in get_json(f"{url}/api/runs")["runs"]}
    page.goto(url + f"/runs/{runs['hostile']['flow_run_id']}")
    page.wait_for_selector("#logs .log-line")
    title = page.title()
    logs = page.locator("#logs").inner_text()
    assert HOSTILE in logs and HOSTILE_SCRIPT in logs
    assert HOSTILE in page.locator("#waterfall").inner_text()  # the task run's name
    page.locator(".wf-row[data-kind=run][data-state=Failed]").click()
    page.locator("#run-detail .exception").wait_for(timeout=TIMEOUT)
    assert HOSTILE_SCRIPT in page.locator("#run-detail .exception").inner_text()
    # nothing of it became an element, ran, or fetched anything
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 1 and page.locator("script").get_attribute("src") == "/static/app.js"
    assert "pwned" not in title and "pwned" not in page.title()

    # artifacts: markdown rendered (a heading, a real link), its HTML as text; a table as a table
    page.goto(url + f"/runs/{runs['fine']['flow_run_id']}")
    page.locator(".wf-row[data-kind=run]", has_text="report-").click()
    page.locator("#run-detail", has_text="report").wait_for(timeout=TIMEOUT)
    page.locator("#run-detail .artifact", has_text="report").first.click()
    rendered = page.locator("#run-detail .artifact-body").first
    rendered.locator("h1", has_text="Report").wait_for(timeout=TIMEOUT)
    assert rendered.locator("a").first.get_attribute("href") == "https://example.com/docs"
    assert HOSTILE in rendered.inner_text() and HOSTILE_SCRIPT in rendered.inner_text()
    page.locator("#run-detail .artifact", has_text="counts").first.click()
    page.locator("#run-detail .artifact-body table td", has_text=HOSTILE).first.wait_for(timeout=TIMEOUT)
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    assert "pwned" not in page.title()


def test_the_script_never_builds_markup_from_strings() -> None:
    """The page builds its DOM from text nodes only (what the hostile-data test checks one case of)."""
    code = (STATIC / "app.js").read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "DOMParser", "eval(",
                   "new Function", "javascript:"):
        assert banned not in code, banned
    html = (STATIC / "index.html").read_text()
    assert "<script>" not in html and "style=" not in html and "<style" not in html and "http" not in html
    assert sum(p.stat().st_size for p in STATIC.iterdir()) < 120_000  # small: no framework, no fonts


def test_a_damaged_spool_is_shown_with_a_warning(page: Any, home: Path, tmp_path: Path) -> None:
    shutil.copytree(home / "spool", tmp_path / "spool")
    logs = sorted((tmp_path / "spool").glob("logs-*.jsonl"))[0]
    with logs.open("ab") as handle:
        handle.write(b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"intValue": "\xb2"}}]}]}]}\n')
        handle.write(b"\xff\xfe\x00 not json at all\n")
    with serving(tmp_path) as url:
        page.goto(url + "/")
        page.wait_for_selector("tr.run")
        warning = page.locator("#spool-warning")
        warning.wait_for(state="visible", timeout=TIMEOUT)
        assert re.search(r"Skipped \d+ damaged spool record", warning.inner_text())
        assert logs.name in warning.inner_text()
        assert len(runs_shown(page)) == 4
        page.click("tr.run[data-state=Failed] a.run-link")
        page.wait_for_selector("#logs .log-line")


def test_an_unknown_run_and_an_empty_spool_say_so(page: Any, tmp_path: Path) -> None:
    with serving(tmp_path) as url:
        page.goto(url + "/")
        page.locator("#empty").wait_for(state="visible", timeout=TIMEOUT)
        assert "Run a flow first" in page.locator("#empty").inner_text()
        page.goto(url + "/runs/no-such-run")
        page.locator("#error").wait_for(state="visible", timeout=TIMEOUT)
        assert "No flow run matching 'no-such-run'" in page.locator("#error").inner_text()
    page.problems.clear()  # the 404 of that address is logged by the browser: it is what was asked for


def test_a_flow_page_charts_its_runs(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_selector("tr.run")
    page.locator("tr.run[data-state=Failed] a.flow-link").click()
    page.wait_for_selector("svg#duration-chart circle.point")
    assert page.locator("svg#duration-chart circle.point").count() == 1
    assert page.locator("svg#duration-chart circle.point.failed").count() == 1
    assert page.url.endswith("/flows/failing")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_readme_screenshot_is_the_run_page_of_the_example(page: Any, tmp_path: Path) -> None:
    """Taken from `examples/etl.py`'s run; written to docs/images/ui-run.png with OTELFLOW_WRITE_SCREENSHOT=1."""
    proc = subprocess.run([PYTHON, "examples/etl.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env=subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert proc.returncode == 0, proc.stderr
    with serving(tmp_path) as url:
        page.goto(url + "/runs/latest")
        page.wait_for_selector("#logs .log-line")
        page.locator(".wf-row[data-kind=group] .wf-expand").first.click()
        page.wait_for_selector(".wf-row[data-kind=run]:has-text('transform-')")
        shot = tmp_path / "ui-run.png"
        page.screenshot(path=str(shot))
    assert _png_size(shot) == (1280, 800)
    if os.environ.get("OTELFLOW_WRITE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
    # the committed one: this page, this size, small enough for a README
    assert SCREENSHOT.exists() and _png_size(SCREENSHOT) == (1280, 800) and SCREENSHOT.stat().st_size < 250_000
