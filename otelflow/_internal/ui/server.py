"""The HTTP side of ``otelflow ui``: the page, its assets and the JSON API (``docs/ui.md``) on one port.

Python's own ``http.server`` (a thread per request): the page is for one person on one machine, and the core
needs no web framework. Every answer carries a strict Content-Security-Policy; only ``GET`` and ``HEAD`` are
answered; on loopback, a ``Host`` header that does not name loopback is refused (DNS rebinding).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import ipaddress
import json
import re
import socket
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Final

from otelflow._internal.ui.api import Api, ApiError

__all__ = ["CSP", "UiServer", "is_loopback"]

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
              "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_SECURITY_HEADERS: Final = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_ASSETS: Final = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_PAGES: Final = re.compile(r"^/(?:$|runs/?$|flows/[^/]+/?$|runs/(?:flow-run/)?[^/]+/?$)")
_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to listen on) is this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


def _asset(name: str) -> bytes:
    return (importlib.resources.files("otelflow._internal.ui") / "static" / name).read_bytes()


class UiServer(ThreadingHTTPServer):
    """``otelflow ui``'s server: :meth:`serve_forever` answers until :meth:`shutdown`."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, api: Api, host: str = "127.0.0.1", port: int = 4200) -> None:
        self.api = api
        self.loopback = is_loopback(host)
        self.address_family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
        self._assets: dict[str, tuple[bytes, str]] = {}
        self._assets_lock = threading.Lock()
        super().__init__((host.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        """The page's address (with the port actually bound, when 0 was asked for)."""
        host, port = self.server_address[:2]
        shown = str(host)
        if shown in ("0.0.0.0", "::"):
            shown = "127.0.0.1" if shown == "0.0.0.0" else "[::1]"
        elif ":" in shown:
            shown = f"[{shown}]"
        return f"http://{shown}:{port}"

    def asset(self, name: str) -> tuple[bytes, str]:
        """An asset's bytes and ETag (read once)."""
        with self._assets_lock:
            found = self._assets.get(name)
            if found is None:
                body = _asset(name)
                found = self._assets[name] = (body, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
            return found

    def server_close(self) -> None:
        super().server_close()
        self.api.close()


class _Handler(BaseHTTPRequestHandler):
    server: UiServer
    server_version = "otelflow-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    _allowed: ClassVar[str] = "GET, HEAD"

    # --- plumbing ---------------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a page polling every second would fill the terminal."""

    def _send(self, status: int, body: bytes, content_type: str, *, etag: str | None = None,
              cache: str = "no-cache", extra: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in _SECURITY_HEADERS:
            self.send_header(name, value)
        self.send_header("Cache-Control", cache)
        if etag is not None:
            self.send_header("ETag", etag)
        for name, value in extra:
            self.send_header(name, value)
        if status == HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, etag: str | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8",
                                                                                                 "surrogatepass")
        self._send(status, body, "application/json; charset=utf-8", etag=etag)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _fresh(self, etag: str) -> bool:
        sent = self.headers.get("If-None-Match")
        return sent is not None and etag in [tag.strip() for tag in sent.split(",")]

    def _host_ok(self) -> bool:
        if not self.server.loopback:
            return True
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            name = host[: host.find("]") + 1] if "]" in host else host
        else:
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        return name in _LOOPBACK_NAMES

    # --- methods ----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._get()

    def do_HEAD(self) -> None:
        self.do_GET()

    def _refuse_method(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b'{"error": "The page only reads: GET and HEAD."}',
                   "application/json; charset=utf-8", extra=(("Allow", self._allowed),))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    # --- routes -----------------------------------------------------------------------------------------------
    def _get(self) -> None:
        if not self._host_ok():
            self._error(HTTPStatus.MISDIRECTED_REQUEST,
                        "This server answers to localhost and 127.0.0.1 only (otelflow ui --host to serve others).")
            return
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=False)
        if path.startswith("/api/"):
            self._api(path, query)
        elif path.startswith("/static/"):
            name = path[len("/static/"):]
            if name not in _ASSETS:
                self._error(HTTPStatus.NOT_FOUND, "No such file.")
                return
            body, etag = self.server.asset(name)
            if self._fresh(etag):
                self._send(HTTPStatus.NOT_MODIFIED, b"", "", etag=etag)
            else:
                self._send(HTTPStatus.OK, body, _ASSETS[name], etag=etag)
        elif path == "/favicon.ico":
            body, etag = self.server.asset("favicon.svg")
            self._send(HTTPStatus.OK, body, _ASSETS["favicon.svg"], etag=etag)
        elif _PAGES.match(path):
            body, etag = self.server.asset("index.html")
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", etag=etag)
        else:
            body, _ = self.server.asset("index.html")
            self._send(HTTPStatus.NOT_FOUND, body, "text/html; charset=utf-8")

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        api = self.server.api
        parts = [urllib.parse.unquote(p) for p in path[len("/api/"):].split("/") if p != ""]
        try:
            if parts == ["config"]:
                self._json(HTTPStatus.OK, api.config())
                return
            if len(parts) == 2 and parts[0] == "artifacts":  # from the store, not the spool: no ETag
                self._json(HTTPStatus.OK, api.artifact(parts[1]))
                return
            # Everything else is read from the index: answer 304 without reading when nothing changed.
            etag = 'W/"' + hashlib.sha256(f"{api.version()}|{self.path}".encode("utf-8", "surrogatepass")
                                          ).hexdigest()[:24] + '"'
            if self._fresh(etag):
                self._send(HTTPStatus.NOT_MODIFIED, b"", "", etag=etag)
                return
            if parts == ["runs"]:
                payload = api.runs(query)
            elif len(parts) == 2 and parts[0] == "flows":
                payload = api.flow(parts[1], query)
            elif len(parts) == 2 and parts[0] == "runs":
                payload = api.run(parts[1])
            elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "group":
                payload = api.group(parts[1], query)
            elif len(parts) == 3 and parts[0] == "runs" and parts[2] == "logs":
                payload = api.logs(parts[1], query)
            elif len(parts) == 4 and parts[0] == "runs" and parts[2] == "spans":
                payload = api.span(parts[1], parts[3])
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, f"No API at {path} (see docs/ui.md).")
        except ApiError as exc:
            self._error(exc.status, exc.message)
            return
        except Exception as exc:  # the page shows what went wrong; the server goes on
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
            return
        self._json(HTTPStatus.OK, payload, etag=etag)
