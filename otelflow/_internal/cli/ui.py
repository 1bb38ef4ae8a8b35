"""``otelflow ui``: serve the local spool as a web page (``docs/ui.md``).

    otelflow ui [--host 127.0.0.1] [--port 4200] [--open] [--home DIR]

Listens on loopback unless ``--host`` says otherwise (and then warns: anyone who can reach the address reads the
runs). Runs until Ctrl-C.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from pathlib import Path

import click

from otelflow._internal.cli import runs as _shared
from otelflow._internal.cli.support import fail as _fail

__all__ = ["ui_command"]


@click.command("ui")
@_shared.home_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback lets others on the network read your runs.")
@click.option("--port", type=click.IntRange(0, 65535), default=4200, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in your web browser.")
def ui_command(home: str | None, host: str, port: int, open_browser: bool) -> None:
    """Serve the runs, traces and logs of the local spool as a web page (until Ctrl-C)."""
    from otelflow._internal.ui.api import Api
    from otelflow._internal.ui.server import UiServer, is_loopback
    from otelflow.settings import get_settings

    settings = get_settings()
    spool = _shared.spool_dir(home)
    store = None  # the configured store (OTELFLOW_STORE_URL, else the home's)
    if home and not os.environ.get("OTELFLOW_STORE_URL"):
        from otelflow.stores.sqlite import sqlite_url

        store = sqlite_url(Path(home).expanduser() / "store.sqlite3")
    api = Api(spool, store=store, jaeger_url=settings.jaeger_url, grafana_url=settings.grafana_url)
    try:
        server = UiServer(api, host, port)
    except OSError as exc:
        api.close()
        if exc.errno == errno.EADDRINUSE:
            _fail(f"otelflow ui: port {port} on {host} is in use (another otelflow ui, or Prefect's server?). "
                  "Choose another with --port.")
        _fail(f"otelflow ui: cannot listen on {host}:{port}: {exc.strerror or exc}")
    url = server.url
    if not is_loopback(host):
        click.echo(f"otelflow ui: warning: listening on {host}, not on loopback: anyone who can reach this "
                   "machine on that address can read every run, log and parameter in the spool.", err=True)
    click.echo(f"otelflow ui: {url}  (spool {spool}; Ctrl-C stops)")
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
