"""The queries users copy: every PromQL and LogQL expression of the dashboards, the README and the docs.

Shared by the real-stack tests (which run them against the real Prometheus, and compute LogQL names from
what the real Collector delivers) and the static checks of Loki and Grafana.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards" / "json"
DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "datasources.yaml"
README = ROOT / "README.md"
STACK_DOC = ROOT / "docs" / "production-stack.md"


def dashboards() -> list[dict[str, Any]]:
    """Every dashboard JSON under dashboards/json."""
    return [json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


def datasources() -> dict[str, Any]:
    """The provisioned Grafana datasources."""
    doc = yaml.safe_load(DATASOURCES.read_text())
    assert isinstance(doc, dict)
    return doc


def datasource_uids(doc: Mapping[str, Any]) -> dict[str, str]:
    """uid -> datasource type."""
    return {d["uid"]: d["type"] for d in doc.get("datasources", []) if "uid" in d}


def _ds_uid(ds: Any) -> str | None:
    if isinstance(ds, dict):
        return ds.get("uid")
    return ds if isinstance(ds, str) and not ds.startswith("$") else None


def iter_queries(dash: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, datasource uid, expression) of every panel target and query variable of a dashboard."""

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            uid = _ds_uid(t.get("datasource")) or _ds_uid(p.get("datasource"))
            yield f"panel {p.get('title')!r} {t.get('refId')}", uid or "", t.get("expr", "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            yield f"variable {v.get('name')}", _ds_uid(v.get("datasource")) or "", q


def dashboard_queries(kind: str) -> list[tuple[str, str]]:
    """(where, expression) of every dashboard query on datasources of ``kind`` (prometheus, loki)."""
    uids = datasource_uids(datasources())
    return [
        (where, expr) for dash in dashboards() for where, uid, expr in iter_queries(dash) if uids.get(uid) == kind
    ]


def readme_stack_section(text: str) -> str:
    """The README's "The production stack" section."""
    start = text.index("## The production stack")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def doc_queries(markdown: str) -> dict[str, list[str]]:
    """PromQL and LogQL a reader copies from the docs: ```promql / ```logql blocks and inline code."""
    queries: dict[str, list[str]] = {"prometheus": [], "loki": []}
    for lang, body in re.findall(r"```(promql|logql)\n(.*?)```", markdown, flags=re.S):
        kind = "prometheus" if lang == "promql" else "loki"
        queries[kind] += [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    prose = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    for code in re.findall(r"`([^`\n]+)`", prose):
        if code.startswith("{service_name"):
            queries["loki"].append(code)
        elif re.match(r"(sum|histogram_quantile|rate|increase|label_values)\(", code) and re.search(r"\w[{\[]", code):
            queries["prometheus"].append(code)  # a query, not a mention like `increase()`
    return queries


def documented_queries(kind: str) -> list[tuple[str, str]]:
    """(where, expression) of every query of ``kind`` in the README's stack section and the stack doc."""
    found = [("README", q) for q in doc_queries(readme_stack_section(README.read_text()))[kind]]
    found += [("docs/production-stack.md", q) for q in doc_queries(STACK_DOC.read_text())[kind]]
    return found


def grafana_expand(expr: str, variables: Mapping[str, str]) -> str:
    """A query as Grafana sends it: ``$name``, ``${name}`` and ``${name:regex}`` replaced by their values."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for Grafana variable {name!r} in {expr!r}")
        return variables[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)
