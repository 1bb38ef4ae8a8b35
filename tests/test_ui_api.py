"""``otelflow ui``'s JSON API (docs/ui.md) over real HTTP on loopback, on spools made by real flow runs.

The browser's view of the same answers is in ``test_ui_page.py``; the ``otelflow ui`` command itself in
``test_ui_command.py``.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from stack_parts import wait_until
from test_cli import start_slow_flow, stop
from ui_scenarios import HOSTILE, HOSTILE_SCRIPT, make_spool
from ui_server import get, get_json, serving

from otelflow._internal.ui.server import CSP

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(ui_home: Path) -> Path:
    return ui_home


@pytest.fixture(scope="module")
def url(ui_url: str) -> str:
    return ui_url


def run_of(url: str, flow: str) -> dict[str, Any]:
    (run,) = [r for r in get_json(f"{url}/api/runs")["runs"] if r["flow"] == flow]
    return run


def row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


# --- runs ------------------------------------------------------------------------------------------------------


def test_runs_lists_flow_runs_newest_first_with_subflows_under_their_parent(url: str) -> None:
    answer = get_json(f"{url}/api/runs")
    flows = [r["flow"] for r in answer["runs"]]
    assert flows == ["hostile", "fine", "failing", "child"]
    failing, child = answer["runs"][2], answer["runs"][3]
    assert (failing["level"], child["level"]) == (0, 1)
    assert child["parent_flow_run_id"] == failing["flow_run_id"]
    assert failing["state"] == "Failed" and failing["task_runs"] == 8 and failing["task_runs_not_completed"] == 3
    assert answer["total"] == 4 and answer["skipped"] is None
    assert answer["flows"] == ["child", "failing", "fine", "hostile"]
    assert set(answer["states"]) == {"Completed", "Failed"}
    fine = answer["runs"][1]
    assert fine["tags"] == ["nightly", "ui"] and fine["duration_ms"] > 0


def test_runs_filters_by_state_flow_text_and_time(url: str) -> None:
    def flows(query: str) -> list[str]:
        return [r["flow"] for r in get_json(f"{url}/api/runs?{query}")["runs"]]

    assert flows("state=failed") == ["failing"]
    assert flows("state=Failed,completed") == ["hostile", "fine", "failing", "child"]
    assert flows("state=any") == ["hostile", "fine", "failing", "child"]
    assert flows("flow=FINE") == ["fine"]
    assert flows("q=hostile-r") == ["hostile"]  # part of a run name
    failing = run_of(url, "failing")
    assert flows("q=" + failing["flow_run_id"][:8]) == ["failing"]  # an id prefix
    assert flows("q=" + failing["trace_id"][:10]) == ["failing", "child"]  # a trace id prefix: its runs
    assert flows("since=1h") == ["hostile", "fine", "failing", "child"]
    assert flows("until=2000-01-01") == []
    assert flows("q=" + urllib.parse.quote("%_")) == []  # LIKE wildcards are text


def test_runs_are_paged(url: str) -> None:
    first = get_json(f"{url}/api/runs?limit=2")
    second = get_json(f"{url}/api/runs?limit=2&offset=2")
    assert first["total"] == second["total"] == 4
    assert [r["flow"] for r in first["runs"]] + [r["flow"] for r in second["runs"]] == [
        "hostile", "fine", "failing", "child"]


@pytest.mark.parametrize("query", ["limit=x", "offset=-1", "since=yesterday-ish", "until=soon"])
def test_a_bad_query_is_a_400_that_says_why(url: str, query: str) -> None:
    answer = get_json(f"{url}/api/runs?{query}", status=400)
    assert query.split("=")[0] in answer["error"]


# --- one run ---------------------------------------------------------------------------------------------------


def test_a_failed_run_has_its_header_waterfall_maps_folded_and_critical_path(url: str) -> None:
    failing = run_of(url, "failing")
    answer = get_json(f"{url}/api/runs/{failing['flow_run_id']}")
    run = answer["run"]
    assert (run["flow"], run["state"], run["flow_run_name"]) == ("failing", "Failed", failing["flow_run_name"])
    assert run["exception"]["type"] == "ValueError" and run["exception"]["message"] == "bad input 1"
    assert "bad input 1" in run["state_message"]
    assert run["states"] == {"Completed": 5, "Failed": 2, "NotReady": 1} and run["task_runs"] == 8
    assert run["services"] == ["otelflow"]
    rows = answer["rows"]
    assert rows[0]["kind"] == "run" and rows[0]["span_id"] == failing["span_id"] and rows[0]["depth"] == 0
    boom = row(rows, task_name="boom")
    assert boom["state"] == "Failed" and boom["failed"] is True and boom["depth"] == 1
    after = row(rows, task_name="after")
    assert after["state"] == "NotReady" and after["upstream_failed"] == [f"{boom['run_name']} (Failed)"]
    assert row(rows, type="flow", depth=1)["run_name"] == run_of(url, "child")["flow_run_name"]
    square = row(rows, kind="group")
    assert (square["name"], square["count"], square["states"]) == ("square", 6, {"Completed": 5, "Failed": 1})
    assert square["p50_ms"] <= square["max_ms"] and square["log_count"] >= 6
    assert answer["rows_total"] == len(rows) == 5  # the flow run, boom, after, the subflow, the map
    axis = answer["axis"]
    assert axis["start_unix_nano"] <= min(r["start_unix_nano"] for r in rows)
    assert axis["end_unix_nano"] >= max(r["end_unix_nano"] for r in rows)
    # the run's end was decided by the last thing it did (the map), then what ran before the map started
    assert answer["critical_path"][0] == failing["span_id"]
    assert square["critical"] is True and rows[0]["critical"] is True
    assert answer["links"]["show_command"] == f"otelflow show {failing['flow_run_id']}"
    assert answer["links"]["jaeger"] is None and answer["links"]["grafana"] is None


def test_a_run_is_found_by_id_prefix_name_trace_id_and_latest(url: str) -> None:
    failing = run_of(url, "failing")
    for ident in (failing["flow_run_id"][:8], failing["flow_run_name"], failing["trace_id"]):
        assert get_json(f"{url}/api/runs/{ident}")["run"]["flow_run_id"] == failing["flow_run_id"]
    assert get_json(f"{url}/api/runs/latest")["run"]["flow"] == "hostile"
    assert "No flow run matching 'nope'" in get_json(f"{url}/api/runs/nope", status=404)["error"]


def test_a_subflow_page_is_its_own_subtree(url: str) -> None:
    child = run_of(url, "child")
    answer = get_json(f"{url}/api/runs/{child['flow_run_id']}")
    assert [r["type"] for r in answer["rows"]] == ["flow"] and answer["rows"][0]["depth"] == 0
    assert answer["run"]["parent_flow_run_id"] == run_of(url, "failing")["flow_run_id"]
    messages = [log["message"] for log in get_json(f"{url}/api/runs/{child['flow_run_id']}/logs")["logs"]]
    assert "child running 7" in messages and "about to fail" not in messages


def test_a_folded_map_expands_into_its_runs(url: str) -> None:
    failing = run_of(url, "failing")
    square = row(get_json(f"{url}/api/runs/{failing['flow_run_id']}")["rows"], kind="group")
    query = urllib.parse.urlencode({"parent": square["parent_span_id"], "name": square["name"]})
    members = get_json(f"{url}/api/runs/{failing['flow_run_id']}/group?{query}")
    assert members["total"] == 6
    assert [r["map_index"] for r in members["rows"]] == list(range(6))
    assert {r["depth"] for r in members["rows"]} == {square["depth"]}
    three = members["rows"][3]
    assert three["state"] == "Failed" and three["attempts"] == 2  # retried once, failed again
    page = get_json(f"{url}/api/runs/{failing['flow_run_id']}/group?{query}&offset=4&limit=10")
    assert [r["map_index"] for r in page["rows"]] == [4, 5]
    assert get_json(f"{url}/api/runs/{failing['flow_run_id']}/group?parent=00&name=square", status=404)
    assert get_json(f"{url}/api/runs/{failing['flow_run_id']}/group", status=400)


def test_a_run_in_full_has_its_exception_traceback_inputs_and_logs(url: str) -> None:
    failing = run_of(url, "failing")
    rows = get_json(f"{url}/api/runs/{failing['flow_run_id']}")["rows"]
    boom = get_json(f"{url}/api/runs/{failing['flow_run_id']}/spans/{row(rows, task_name='boom')['span_id']}")
    assert boom["exception"]["type"] == "ValueError"
    assert 'raise ValueError(f"bad input {x}")' in boom["exception"]["stacktrace"]
    assert any("bad input 1" in log["message"] and log["severity"] == "ERROR" for log in boom["logs"])
    assert boom["attributes"]["otelflow.task.name"] == "boom" and boom["logs_omitted"] == 0
    after = get_json(f"{url}/api/runs/{failing['flow_run_id']}/spans/{row(rows, task_name='after')['span_id']}")
    assert after["state"] == "NotReady" and after["upstream_failed"] == [f"{boom['run_name']} (Failed)"]
    fine = run_of(url, "fine")
    rows = get_json(f"{url}/api/runs/{fine['flow_run_id']}")["rows"]
    count = row(rows, task_name="count")
    report = get_json(f"{url}/api/runs/{fine['flow_run_id']}/spans/{row(rows, task_name='report')['span_id']}")
    assert report["inputs"] == [{"parameter": "rows", "span_id": count["span_id"], "run_name": count["run_name"],
                                 "state": "Completed"}]
    assert get_json(f"{url}/api/runs/{fine['flow_run_id']}/spans/0123456789abcdef", status=404)


def test_artifacts_are_listed_on_their_run_and_read_from_the_store(url: str) -> None:
    fine = run_of(url, "fine")
    rows = get_json(f"{url}/api/runs/{fine['flow_run_id']}")["rows"]
    report = get_json(f"{url}/api/runs/{fine['flow_run_id']}/spans/{row(rows, task_name='report')['span_id']}")
    by_key = {a["key"]: a for a in report["artifacts"]}
    assert set(by_key) == {"report", "counts"}
    markdown = get_json(f"{url}/api/artifacts/{by_key['report']['id']}")
    assert markdown["type"] == "markdown" and markdown["data"].startswith("# Report") and HOSTILE in markdown["data"]
    table = get_json(f"{url}/api/artifacts/{by_key['counts']['id']}")
    assert table["type"] == "table" and table["data"] == [{"name": HOSTILE, "rows": 3}]
    assert get_json(f"{url}/api/artifacts/00000000-0000-0000-0000-000000000000", status=404)
    assert get_json(f"{url}/api/artifacts/not-an-id", status=400)


# --- logs ------------------------------------------------------------------------------------------------------


def test_logs_of_a_run_in_time_order_filtered_and_paged(url: str) -> None:
    failing = run_of(url, "failing")
    base = f"{url}/api/runs/{failing['flow_run_id']}/logs"
    every = get_json(base)["logs"]
    times = [log["time_unix_nano"] for log in every]
    assert times == sorted(times) and len(every) > 10
    assert every[0]["message"].startswith("Beginning flow run") and every[0]["run_name"] == failing["flow_run_name"]
    warnings = get_json(f"{base}?level=warning")["logs"]
    assert warnings and all(log["severity_number"] >= 13 for log in warnings)
    assert "about to fail" in [log["message"] for log in warnings]
    squaring = get_json(f"{base}?q=SQUARING")["logs"]
    assert sorted(log["message"] for log in squaring) == sorted(
        [f"squaring {i}" for i in range(6)] + ["squaring 3"])  # 3 ran twice
    pages, offset = [], 0
    while offset is not None:
        page = get_json(f"{base}?limit=4&offset={offset}")
        pages.extend(page["logs"])
        offset = page["next_offset"]
    assert pages == every
    boom_span = next(log["span_id"] for log in every if "bad input 1" in log["message"])
    own = get_json(f"{base}?span={boom_span}")["logs"]
    assert own and {log["span_id"] for log in own} == {boom_span}
    failed = next(log for log in own if log["exception"])
    assert failed["exception"]["type"] == "ValueError"
    assert get_json(f"{base}?level=loud", status=400)["error"].startswith("level=")


# --- out of the page --------------------------------------------------------------------------------------------


def test_jaeger_and_grafana_links_when_the_stack_is_configured(home: Path) -> None:
    with serving(home, jaeger_url="http://localhost:16686/", grafana_url="http://localhost:3000") as url:
        failing = run_of(url, "failing")
        links = get_json(f"{url}/api/runs/{failing['flow_run_id']}")["links"]
        assert links["jaeger"] == f"http://localhost:16686/trace/{failing['trace_id']}"
        grafana = urllib.parse.urlsplit(links["grafana"])
        assert grafana.netloc == "localhost:3000" and grafana.path == "/explore"
        query = urllib.parse.parse_qs(grafana.query)
        assert query["schemaVersion"] == ["1"]
        (pane,) = json.loads(query["panes"][0]).values()
        # the data source the stack provisions (its uid), and the README's query of a run's logs
        provisioned = yaml.safe_load((REPO_ROOT / "dashboards/provisioning/datasources/datasources.yaml").read_text())
        (loki,) = [d for d in provisioned["datasources"] if d["type"] == "loki"]
        assert pane["datasource"] == loki["uid"] and pane["queries"][0]["datasource"]["uid"] == loki["uid"]
        assert pane["queries"][0]["expr"] == (
            f'{{service_name="otelflow"}} | otelflow_flow_run_id="{failing["flow_run_id"]}"')
        assert int(pane["range"]["from"]) <= failing["start_unix_nano"] // 1_000_000
        assert links["loki_query"] == pane["queries"][0]["expr"]
    with serving(home, jaeger_url="javascript:alert(1)", grafana_url="data:text/html,x") as url:
        links = get_json(f"{url}/api/runs/latest")["links"]
        assert links["jaeger"] is None and links["grafana"] is None  # only http(s) addresses become links


# --- HTTP -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/runs/abc", "/runs/flow-run/abc", "/flows/etl", "/static/app.js",
                                  "/static/app.css", "/api/runs", "/api/config", "/nope", "/api/nope"])
def test_every_answer_has_a_strict_content_security_policy(url: str, path: str) -> None:
    status, headers, _ = get(url + path)
    assert status in (200, 404)
    assert headers["Content-Security-Policy"] == CSP
    assert "default-src 'none'" in CSP and "script-src 'self';" in CSP and "unsafe" not in CSP
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Frame-Options"] == "DENY"


def test_pages_and_assets_are_served_prefect_links_too(url: str) -> None:
    status, headers, body = get(url + "/runs/flow-run/0b2c")  # Prefect's UI link form ("View at ...")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="/static/app.js"' in body and b"<style" not in body and b"<script>" not in body
    status, headers, body = get(url + "/static/app.js")
    assert status == 200 and headers["Content-Type"] == "text/javascript; charset=utf-8" and body
    assert get(url + "/static/../api.py")[0] == 404 and get(url + "/static/index.htm")[0] == 404


def test_the_page_only_reads(url: str) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = get(url + "/api/runs", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, body = get(url + "/api/runs", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


@pytest.mark.parametrize("host", ["evil.example", "evil.example:4200", "127.0.0.1.nip.io", "10.0.0.1:80"])
def test_on_loopback_a_foreign_host_header_is_refused(url: str, host: str) -> None:
    """A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) cannot read the runs."""
    status, _, body = get(url + "/api/runs", headers={"Host": host})
    assert status == 421 and b"localhost" in body
    port = urllib.parse.urlsplit(url).port
    for fine in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost"):
        assert get(url + "/api/runs", headers={"Host": fine})[0] == 200


def test_an_unchanged_answer_is_a_304_and_a_new_run_changes_it(tmp_path: Path, home: Path) -> None:
    shutil.copytree(home / "spool", tmp_path / "spool")
    with serving(tmp_path) as url:
        _status, headers, _ = get(f"{url}/api/runs")
        etag = headers["ETag"]
        assert get(f"{url}/api/runs", headers={"If-None-Match": etag})[0] == 304
        make_spool(tmp_path, "from otelflow import flow, telemetry\n\n@flow\ndef another():\n    pass\n\n"
                             "another()\ntelemetry.flush()\n")
        changed = wait_until(lambda: get(f"{url}/api/runs", headers={"If-None-Match": etag})[0] == 200, 30,
                             "the new run", every=0.1)
        assert changed
        assert get_json(f"{url}/api/runs")["runs"][0]["flow"] == "another"


# --- live, damaged ----------------------------------------------------------------------------------------------


def test_a_running_flow_is_running_then_completed(tmp_path: Path) -> None:
    go = tmp_path / "go"
    flow_proc = start_slow_flow(tmp_path, go)
    try:
        with serving(tmp_path) as url:
            running = wait_until(lambda: [r for r in get_json(f"{url}/api/runs")["runs"] if r["flow"] == "slow"], 60,
                                 "a pending run", every=0.05)[0]
            assert running["running"] is True and running["state"] == "Running"
            page = wait_until(
                lambda: (lambda a: a if any(r.get("task_name") == "wait_for_go" for r in a["rows"]) else None)(
                    get_json(f"{url}/api/runs/{running['flow_run_id']}")), 60, "the running task", every=0.05)
            assert page["run"]["running"] is True and page["rows"][0]["end_unix_nano"] is None
            task = row(page["rows"], task_name="wait_for_go")
            assert task["running"] is True and task["state"] == "Running"
            go.touch()
            assert flow_proc.wait(timeout=60) == 0
            done = wait_until(lambda: (lambda a: a if not a["run"]["running"] else None)(
                get_json(f"{url}/api/runs/{running['flow_run_id']}")), 30, "the run's end", every=0.05)
            assert done["run"]["state"] == "Completed" and row(done["rows"], task_name="wait_for_go")["state"] == (
                "Completed")
    finally:
        go.touch()
        stop(flow_proc)


def test_a_damaged_spool_is_read_around_and_the_damage_reported(tmp_path: Path, home: Path) -> None:
    shutil.copytree(home / "spool", tmp_path / "spool")
    logs = sorted((tmp_path / "spool").glob("logs-*.jsonl"))[0]
    with logs.open("ab") as handle:
        handle.write(b'{"resourceLogs": [{"scopeLogs": "\xff\xfe not json\n')
        handle.write(b"\x00\x01garbage\n")
    spans = sorted((tmp_path / "spool").glob("traces-*.jsonl"))[0]
    with spans.open("ab") as handle:
        handle.write(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5, "spanId": []}]}]}]}\n')
    with serving(tmp_path) as url:
        answer = get_json(f"{url}/api/runs")
        assert [r["flow"] for r in answer["runs"]] == ["hostile", "fine", "failing", "child"]
        assert answer["skipped"]["count"] >= 3
        assert answer["skipped"]["first"].endswith(" line " + answer["skipped"]["first"].rsplit(" ", 1)[1])
        failing = run_of(url, "failing")
        assert get_json(f"{url}/api/runs/{failing['flow_run_id']}")["run"]["state"] == "Failed"
        assert get_json(f"{url}/api/runs/{failing['flow_run_id']}/logs")["logs"]
    with serving(tmp_path) as url:  # again, on the index the first server built: the damage is still told
        skipped = get_json(f"{url}/api/runs")["skipped"]
        assert skipped["count"] >= 2 and skipped["first"] in (logs.name, spans.name)


def test_hostile_text_is_data_in_the_json(url: str) -> None:
    hostile = run_of(url, "hostile")
    answer = get_json(f"{url}/api/runs/{hostile['flow_run_id']}")
    assert row(answer["rows"], type="task")["run_name"] == HOSTILE
    messages = [log["message"] for log in get_json(f"{url}/api/runs/{hostile['flow_run_id']}/logs")["logs"]]
    assert HOSTILE in messages and HOSTILE_SCRIPT in messages


def test_an_empty_home_answers_with_no_runs(tmp_path: Path) -> None:
    with serving(tmp_path) as url:
        answer = get_json(f"{url}/api/runs")
        assert answer["runs"] == [] and answer["total"] == 0 and answer["flows"] == []
        assert "Run a flow first" in get_json(f"{url}/api/runs/latest", status=404)["error"]
        assert get_json(f"{url}/api/flows/etl", status=404)


def test_a_flow_page_has_its_runs_and_statistics(url: str) -> None:
    answer = get_json(f"{url}/api/flows/failing")
    assert answer["flow"] == "failing" and len(answer["runs"]) == 1
    assert answer["stats"]["runs"] == 1 and answer["stats"]["failed"] == 1
    assert answer["stats"]["p50_ms"] == answer["runs"][0]["duration_ms"]
    assert "Did you mean 'failing'?" in get_json(f"{url}/api/flows/failin", status=404)["error"]
