"""Nothing a run records can drive the terminal: names, messages, exception text and log ``extra`` values that
hold escape sequences (clear screen, cursor moves, an OSC window title left unterminated to hide what follows,
bidi overrides) are printed as visible escapes by ``otelflow runs``/``show``/``logs`` and by the run console,
on a real pseudo-terminal and piped.

The only escape sequences allowed on a terminal are the colours otelflow writes itself (SGR: ``ESC [ ... m``).
"""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import pexpect  # type: ignore[import-untyped, unused-ignore]
import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from test_cli import run_script

pytestmark = pytest.mark.slow

HOSTILE = textwrap.dedent(
    r'''
    from otelflow import flow, get_run_logger, task, telemetry

    CLEAR, HOME, TITLE, RTL = "\x1b[2J", "\x1b[1000;1H", "\x1b]0;pwned", "\u202e"


    @task(task_run_name="t" + CLEAR + "ask")
    def evil(x: int) -> int:
        get_run_logger().info("msg" + HOME + "here\rOVER", extra={"colour": "\x1b[31mred", "note": TITLE})
        raise ValueError("bad" + TITLE + "\x07 hidden")


    @flow(name="fl" + RTL + "ow", flow_run_name="run" + TITLE)
    def hostile() -> None:
        get_run_logger().warning("line one\nline two" + CLEAR)
        evil.submit(1).wait()


    if __name__ == "__main__":
        try:
            hostile()
        except ValueError:
            pass
        telemetry.flush()
    '''
)

# Our own colours: ESC [ digits ; m. Anything else starting with ESC (or a BEL, or a lone CR) came from the data.
_OWN_SGR = re.compile(r"\x1b\[[0-9;]*m")


def _foreign_controls(raw: str) -> list[str]:
    text = _OWN_SGR.sub("", raw.replace("\r\n", "\n"))
    return [repr(c) for c in text if (ord(c) < 0x20 and c != "\n") or c in "\x7f\u202e" or 0x80 <= ord(c) < 0xA0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("hostile-home")
    script = home / "hostile.py"
    script.write_text(HOSTILE)
    proc = subprocess.run([PYTHON, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="true"))
    assert proc.returncode == 0, proc.stderr
    # piped run console: no control character of the data at all, and the escapes are visible
    assert not _foreign_controls(proc.stderr), _foreign_controls(proc.stderr)
    assert "\\x1b[2J" in proc.stderr and "\\x1b]0;pwned" in proc.stderr
    return home


def _tty(home: Path, *argv: str, columns: int = 120) -> tuple[int, str]:
    environment = subprocess_env(OTELFLOW_HOME=str(home), TERM="xterm-256color", OTELFLOW_LOGGING_TO_CONSOLE="true")
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        environment.pop(name, None)
    child = pexpect.spawn(argv[0], list(argv[1:]), cwd=str(REPO_ROOT), env=environment,
                          dimensions=(60, columns), encoding="utf-8", timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, str(child.before)


@pytest.mark.parametrize("command", [["runs"], ["show"], ["show", "--traceback"], ["show", "--expand"],
                                     ["logs"], ["show", "--json"], ["logs", "--json"]])
@pytest.mark.parametrize("columns", [80, 200])
def test_cli_on_a_terminal_prints_escapes_visibly(home: Path, command: list[str], columns: int) -> None:
    status, raw = _tty(home, PYTHON, "-m", "otelflow", *command, columns=columns)
    assert status == 0, raw
    assert not _foreign_controls(raw), _foreign_controls(raw)
    if "--json" not in command:
        assert "\\x1b]0;pwned" in raw  # the run name (runs), or the exception text (show, logs)
        assert "\\u202e" in raw or command == ["logs"]  # the flow name, where it is printed


def test_cli_piped_prints_no_control_character(home: Path) -> None:
    for command in (["runs"], ["show", "--traceback"], ["logs"]):
        proc = subprocess.run([PYTHON, "-m", "otelflow", *command], cwd=REPO_ROOT, capture_output=True, text=True,
                              env=subprocess_env(OTELFLOW_HOME=str(home)), timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert not _foreign_controls(proc.stdout), (command, _foreign_controls(proc.stdout))
        assert "\\x1b[1000;1H" in proc.stdout or command == ["runs"]


def test_multi_line_messages_keep_their_lines_under_the_run(home: Path) -> None:
    proc = subprocess.run([PYTHON, "-m", "otelflow", "show"], cwd=REPO_ROOT, capture_output=True, text=True,
                          env=subprocess_env(OTELFLOW_HOME=str(home)), timeout=60)
    lines = proc.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if "line one" in line)
    assert lines[first + 1].strip() == "line two\\x1b[2J"
    assert lines[first + 1].startswith(" " * 21)  # under the message, not at column 0
    assert any("msg\\x1b[1000;1Hhere\\x0dOVER" in line for line in lines)  # a lone CR cannot overwrite the line


def test_run_console_on_a_terminal_prints_escapes_visibly(home: Path, tmp_path: Path) -> None:
    status, raw = _tty(tmp_path, PYTHON, str(home / "hostile.py"))
    assert status == 0, raw
    assert not _foreign_controls(raw), _foreign_controls(raw)
    assert "\\x1b]0;pwned" in raw and "\\x1b[31mred" in raw and "\\x1b[2J" in raw


def _record(body: str, attributes: dict[str, object]) -> object:
    from otelflow._internal.spool.otlp_json import LogRecord

    raw = [{"key": k, "value": {"stringValue": v} if isinstance(v, str) else {"intValue": str(v)}}
           for k, v in attributes.items()]
    return LogRecord(time=1_780_000_000_123_000_000, severity_number=17, severity_text="ERROR", body=body,
                     raw_attributes=raw, trace_id="ab" * 16, span_id="cd" * 8)


@pytest.mark.parametrize(("body", "attributes", "who"), [
    ("plain", {}, None),
    ("two\nlines\x1b[2J", {"rows": 5, "otelflow.run.id": "x"}, "load-1"),
    ("boom\r", {"exception.type": "ValueError", "exception.message": "bad\x1b]0;t"}, "t\u202e"),
    ("", {"exception.type": "KeyboardInterrupt", "exception.message": ""}, None),
])
def test_piped_logs_text_is_the_terminal_text_without_styles(body: str, attributes: dict[str, object],
                                                            who: str | None) -> None:
    """`otelflow logs` piped writes plain strings (a million records at string speed): the same text as the
    styled line, escapes included."""
    from otelflow._internal.cli.render import log_line, log_plain

    record = _record(body, attributes)
    assert log_plain(record, who) == log_line(record, who=who).plain  # type: ignore[arg-type]


def test_an_ambiguous_name_lists_the_runs_as_text(home: Path, tmp_path: Path) -> None:
    """Two runs named alike: `show NAME` lists both (exit 1), names escaped like everywhere else."""
    for _ in range(2):
        run_script(tmp_path, HOSTILE, name="hostile.py")
    shown = subprocess.run([PYTHON, "-m", "otelflow", "show", "run\x1b]0;pwned"], cwd=REPO_ROOT, capture_output=True,
                           text=True, timeout=60, env=subprocess_env(OTELFLOW_HOME=str(tmp_path)))
    assert shown.returncode == 1 and "matches 2 flow runs" in shown.stderr, shown.stderr
    assert not _foreign_controls(shown.stderr), _foreign_controls(shown.stderr)
    assert shown.stderr.count("run\\x1b]0;pwned") >= 2
