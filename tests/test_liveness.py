"""The spool writer's liveness lock: how the CLI tells a run still going from one whose process was killed.

Each case uses real processes: the lock is the kernel's ``flock``, released when its holder ends however it ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow._internal.spool.liveness import lock_path_for, orphaned_locks, writer_gone_at
from otelflow._internal.spool.writer import SpoolWriter

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="flock and fork are POSIX")


def test_a_live_writer_is_alive_and_a_closed_one_is_gone(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, "traces", mark_alive=True)
    writer.write("{}")
    assert writer.path is not None
    name = writer.path.name
    lock = lock_path_for(tmp_path, name)
    assert lock is not None and lock.exists()
    assert writer_gone_at(tmp_path, name) is None  # this process holds the lock
    writer.close()
    assert writer_gone_at(tmp_path, name) == writer.path.stat().st_mtime_ns  # gone: last heard of at its last write
    assert lock.exists()  # kept: it is the evidence


def test_no_lock_file_says_nothing(tmp_path: Path) -> None:
    """An older otelflow's spool (or a hand-written file) has no lock: its runs stay Running."""
    plain = SpoolWriter(tmp_path, "traces")
    plain.write("{}")
    assert plain.path is not None
    assert writer_gone_at(tmp_path, plain.path.name) is None
    plain.close()
    assert writer_gone_at(tmp_path, plain.path.name) is None
    assert writer_gone_at(tmp_path, "traces-pending-123.jsonl") is None  # not a writer's file name


FORKED = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from otelflow._internal.spool.liveness import writer_gone_at
    from otelflow._internal.spool.writer import SpoolWriter

    spool = Path(sys.argv[1])
    writer = SpoolWriter(spool, "traces", mark_alive=True)
    writer.write("{}")
    name = writer.path.name
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    child = os.fork()
    if child == 0:  # lives on, holding whatever descriptors it kept, until the parent is done
        os.close(write_end)
        os.write(ready_write, b"r")  # the fork hooks have run
        os.read(read_end, 1)
        os._exit(0)
    os.close(read_end)
    os.read(ready_read, 1)
    alive_before = writer_gone_at(spool, name) is None
    writer._mark.close()  # the parent's writing ends (as at its exit) while its forked child still lives
    gone = writer_gone_at(spool, name)
    os.write(write_end, b"x")
    os.waitpid(child, 0)
    print(json.dumps({"alive_before": alive_before, "gone_while_child_lives": gone is not None}))
    """
)


def test_a_forked_child_does_not_keep_its_parent_alive(tmp_path: Path) -> None:
    """A child inherits its parent's descriptors, and so its lock: without letting go of it at fork, a killed
    parent's runs would look alive for as long as a worker it forked lives."""
    proc = subprocess.run([PYTHON, "-c", FORKED, str(tmp_path)], cwd=REPO_ROOT, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"alive_before": True, "gone_while_child_lives": True}


def test_prune_deletes_a_gone_process_lock_with_its_last_file(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ended = SpoolWriter(spool, "traces", mark_alive=True)
    ended.write("{}")
    ended.close()
    live = SpoolWriter(spool, "logs", mark_alive=True)
    live.write("{}")
    assert ended.path is not None and live.path is not None
    ended_lock, live_lock = lock_path_for(spool, ended.path.name), lock_path_for(spool, live.path.name)
    assert ended_lock is not None and live_lock is not None
    assert orphaned_locks(spool) == []  # the ended process's file is still there: its lock is still evidence
    ended.path.unlink()
    live.path.unlink()  # a live process's lock stays even with no file left
    assert orphaned_locks(spool) == [ended_lock]
    proc = subprocess.run([PYTHON, "-m", "otelflow", "spool", "prune", "--older-than", "1"], cwd=REPO_ROOT,
                          env=subprocess_env(OTELFLOW_HOME=str(tmp_path)), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not ended_lock.exists() and live_lock.exists()
    live.close()
