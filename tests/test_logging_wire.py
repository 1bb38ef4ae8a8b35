"""Run logs over the wire: a real OTLP/HTTP exporter in a child process, a loopback receiver in the test."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from conftest import PYTHON, subprocess_env

from otelflow import semconv as sc

SCRIPT = textwrap.dedent(
    """
    from otelflow import flow, task, tags, get_run_logger, telemetry

    @task
    def process_data(data):
        get_run_logger().warning("Processing %d records", len(data), extra={"batch_size": 1000})
        return len(data)

    @flow
    def data_pipeline():
        get_run_logger().info("Configuration", extra={"env": "production", "ratio": 0.5, "ok": True})
        with tags("etl"):
            return process_data.map([[1, 2], [3]]).result()

    assert data_pipeline() == [2, 1]
    assert telemetry.flush(10)
    """
)


@pytest.mark.slow
def test_run_logs_over_otlp_http_correlate_with_their_spans(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    script = tmp_path / "pipeline.py"
    script.write_text(SCRIPT)
    env = subprocess_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OTEL_SERVICE_NAME="logging-wire-test",
        OTELFLOW_HOME=str(tmp_path),
        OTELFLOW_LOGGING_TO_CONSOLE="false",
    )
    result = subprocess.run([PYTHON, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr

    logs = otlp_receiver.wait_for(lambda: len(otlp_receiver.logs()) >= 7 and otlp_receiver.logs())
    spans = otlp_receiver.wait_for(lambda: len(otlp_receiver.spans()) >= 3 and otlp_receiver.spans())
    (flow_span,) = [s for s in spans if s.name == "flow data-pipeline"]
    task_spans = {s.attributes[sc.RUN_ID]: s for s in spans if s.name == "task process_data"}
    assert len(logs) == 7  # 3 from the code, 4 lifecycle records from the engine (flow begin/end, each task's end)

    (begin,) = [log for log in logs if log.body.startswith("Beginning flow run ")]
    ends = [log for log in logs if log.body.startswith("Finished in state ")]
    (finish,) = [log for log in ends if sc.TASK_RUN_ID not in log.attributes]
    task_ends = [log for log in ends if sc.TASK_RUN_ID in log.attributes]
    assert [log.body for log in task_ends] == ["Finished in state Completed()"] * 2
    assert sorted(log.span_id for log in task_ends) == sorted(s.span_id for s in task_spans.values())
    assert all(log.scope_name == "otelflow.task_runs" for log in task_ends)
    assert begin.body.endswith("for flow 'data-pipeline'")
    assert finish.body.startswith("Finished in state Completed") and finish.severity_text == "INFO"
    for engine_log in (begin, finish):
        assert (engine_log.trace_id, engine_log.span_id) == (flow_span.trace_id, flow_span.span_id)
        assert engine_log.attributes[sc.FLOW_RUN_ID] == flow_span.attributes[sc.RUN_ID]

    (config,) = [log for log in logs if log.body == "Configuration"]
    assert (config.trace_id, config.span_id) == (flow_span.trace_id, flow_span.span_id)
    assert config.severity_text == "INFO" and config.severity_number == 9
    assert config.attributes["env"] == "production"
    assert config.attributes["ratio"] == 0.5 and config.attributes["ok"] is True
    assert config.attributes[sc.FLOW_RUN_ID] == flow_span.attributes[sc.RUN_ID]
    assert config.attributes[sc.FLOW_NAME] == "data-pipeline"
    assert config.resource["service.name"] == "logging-wire-test"
    assert config.scope_name == "otelflow.flow_runs"

    task_logs = [log for log in logs if log.body.startswith("Processing")]
    assert sorted(log.body for log in task_logs) == ["Processing 1 records", "Processing 2 records"]
    for log in task_logs:
        span = task_spans[log.attributes[sc.TASK_RUN_ID]]
        assert (log.trace_id, log.span_id) == (span.trace_id, span.span_id)
        assert log.trace_id == flow_span.trace_id
        assert log.severity_text == "WARN" and log.severity_number == 13
        assert log.attributes["batch_size"] == 1000  # an int on the wire, not "1000"
        assert log.attributes[sc.TASK_RUN_NAME] == span.attributes[sc.RUN_NAME]
        assert log.attributes[sc.TASK_NAME] == "process_data"
        assert log.attributes[sc.FLOW_RUN_ID] == flow_span.attributes[sc.RUN_ID]
        assert log.attributes[sc.FLOW_RUN_NAME] == flow_span.attributes[sc.RUN_NAME]
        assert log.attributes[sc.TAGS] == ["etl"]
        assert log.scope_name == "otelflow.task_runs"
