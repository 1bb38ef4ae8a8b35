"""Build the real parts of the production stack that the test suite runs, from their Go modules.

    python tools/stack/build.py            # build what is missing, print {"otelcol": path, ...} as JSON
    python tools/stack/build.py --check    # exit 1 if a part is not built yet (builds nothing)

Each part is a Go tool module next to this file, pinned by its ``go.mod``/``go.sum``:

- ``otelcol``: the OpenTelemetry Collector, generated and compiled by the Collector's builder (ocb) from
  ``otelcol/manifest.yaml`` (exactly the components ``collector/*.yaml`` use);
- ``jaeger``: Jaeger v2 (``github.com/jaegertracing/jaeger/cmd/jaeger``);
- ``prometheus``: Prometheus (``github.com/prometheus/prometheus/cmd/prometheus``), with no web UI
  assets (its HTTP API is what the tests use).

Binaries are cached outside the repository, once per machine, in
``$OTELFLOW_STACK_CACHE`` (default ``~/.cache/otelflow/stack``), one folder per part named after its
version and a digest of its inputs (the tool module, the manifest, the Go version): changing a pin
builds anew, and two checkouts at the same pins share one build. A build that fails exits non-zero with
the end of its log; it never leaves a half-built folder behind (parts are built in a temporary folder
and renamed into place, under a lock, so concurrent callers build once).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Part:
    """One binary of the stack and the tool module it is built from."""

    name: str
    module_dir: Path
    tool: str  # the package the tool module pins (its `tool` directive)

    def version(self) -> str:
        """The pinned version of the module that holds the tool, read from the tool module's go.mod."""
        text = (self.module_dir / "go.mod").read_text()
        pins = dict(re.findall(r"^\s*(?:require\s+)?(\S+) (v\S+)", text, re.MULTILINE))
        holders = [module for module in pins if self.tool == module or self.tool.startswith(module + "/")]
        if not holders:
            raise SystemExit(f"tools/stack: {self.module_dir / 'go.mod'} does not pin the module of {self.tool}")
        return str(pins[max(holders, key=len)])

    def inputs(self) -> list[Path]:
        """Every file whose content decides what gets built."""
        return sorted(p for p in self.module_dir.iterdir() if p.is_file())


PARTS = (
    Part("otelcol", HERE / "otelcol", "go.opentelemetry.io/collector/cmd/builder"),
    Part("jaeger", HERE / "jaeger", "github.com/jaegertracing/jaeger/cmd/jaeger"),
    Part("prometheus", HERE / "prometheus", "github.com/prometheus/prometheus/cmd/prometheus"),
)


def cache_root() -> Path:
    """Where built parts live: ``$OTELFLOW_STACK_CACHE`` or ``~/.cache/otelflow/stack``."""
    configured = os.environ.get("OTELFLOW_STACK_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "otelflow" / "stack"


def go_executable() -> str:
    """The ``go`` command: on PATH, else the usual install location."""
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise SystemExit("tools/stack: no `go` command (Go 1.26 is needed to build the stack's parts)")
    return found


def go_version(go: str) -> str:
    """``go version`` output, part of every cache key (a new Go builds anew)."""
    return subprocess.run([go, "version"], check=True, capture_output=True, text=True).stdout.strip()


def part_dir(part: Part, go_ver: str) -> Path:
    """The cache folder of one part: ``<name>-<version>-<digest of inputs and Go version>``."""
    digest = hashlib.sha256(go_ver.encode())
    for path in part.inputs():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return cache_root() / f"{part.name}-{part.version()}-{digest.hexdigest()[:12]}"


def binary(part: Part, go_ver: str) -> Path:
    """Path of a part's binary in the cache (it may not be built yet)."""
    return part_dir(part, go_ver) / part.name


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], *, cwd: Path, log: Path, env: dict[str, str]) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}  (in {cwd})\n")
        out.flush()
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise SystemExit(
            f"tools/stack: building failed ({' '.join(cmd[:3])} ... exit {done.returncode}); "
            f"end of {log}:\n" + "\n".join(tail)
        )


def _build(part: Part, go: str, work: Path, log: Path) -> None:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    out = work / part.name
    if part.name == "otelcol":
        ocb = work / "ocb"
        _run([go, "build", "-o", str(ocb), part.tool], cwd=part.module_dir, log=log, env=env)
        manifest = (part.module_dir / "manifest.yaml").read_text()
        source = work / "source"
        generated = work / "manifest.yaml"
        generated.write_text(
            manifest.replace("dist:\n", f"dist:\n  output_path: {json.dumps(str(source))}\n", 1)
        )
        _run([str(ocb), "--config", str(generated)], cwd=work, log=log, env=env)
        (source / "otelcol-otelflow").rename(out)
        shutil.rmtree(source)
        ocb.unlink()
        generated.unlink()
    else:
        _run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(out), part.tool],
            cwd=part.module_dir,
            log=log,
            env=env,
        )


def ensure(part: Part, go: str, go_ver: str, *, report: bool = True) -> Path:
    """Build one part unless its cache folder already holds it; return the binary's path."""
    target = part_dir(part, go_ver)
    path = target / part.name
    if path.exists():
        return path
    with _locked(cache_root()):
        if path.exists():  # another process built it while we waited
            return path
        work = Path(tempfile.mkdtemp(prefix=f".{part.name}-", dir=cache_root()))
        log = cache_root() / f"{target.name}.log"
        log.write_text("")
        started = time.monotonic()
        if report:
            print(f"tools/stack: building {part.name} {part.version()} (log: {log})", file=sys.stderr, flush=True)
        try:
            _build(part, go, work, log)
            work.rename(target)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if report:
            took = time.monotonic() - started
            print(f"tools/stack: built {part.name} in {took:.0f} s -> {path}", file=sys.stderr, flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """Build (or with ``--check`` only look for) every part; print their paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="build nothing; exit 1 if a part is missing")
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(p.name for p in PARTS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.parts) - {p.name for p in PARTS}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    wanted = [p for p in PARTS if not args.parts or p.name in args.parts]
    go = go_executable()
    go_ver = go_version(go)
    paths: dict[str, str] = {}
    for part in wanted:
        if args.check:
            path = binary(part, go_ver)
            if not path.exists():
                print(f"tools/stack: {part.name} is not built ({path})", file=sys.stderr)
                return 1
        else:
            path = ensure(part, go, go_ver)
        paths[part.name] = str(path)
    print(json.dumps(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
