"""The HTTP side of ``bench dashboard`` (bench/dashboard.py builds the page and the run details).

Three GET routes and nothing else: ``/`` (the page, recomputed from the result files on every
load), ``/assets/plotly.min.js`` and ``/api/run/<id>`` (an id looked up among the results just
loaded). No URL is ever mapped to a file path; every other path is 404 and every other method 405.
"""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

from bench.dashboard import LOOPBACK, PLOTLY_ASSET, RUN_ID, _clean, load, render_page, run_details
from bench.dashboard_assets import _plotly_js


def make_server(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8050, *, quiet: bool = False):
    """A ``ThreadingHTTPServer`` serving the dashboard of ``runs_dir`` (call ``serve_forever``)."""
    from http import HTTPStatus
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlsplit

    runs_dir = str(runs_dir)
    assets = {}

    class Handler(BaseHTTPRequestHandler):
        server_version = "bench-dashboard"
        sys_version = ""

        def log_message(self, fmt, *args):
            if not quiet:
                sys.stderr.write(f"bench dashboard: {self.address_string()} {fmt % args}\n")

        def _send(self, code: int, body: bytes, ctype: str, *, head: bool = False, extra: dict | None = None):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Content-Security-Policy", "frame-ancestors 'none'")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _not_found(self, head: bool):
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head=head)

        def _host_ok(self) -> bool:
            # DNS rebinding: a page on another site must not read a loopback-bound dashboard
            if self.server.server_address[0] not in ("127.0.0.1", "::1"):
                return True
            name = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
            return name in LOOPBACK

        def _serve(self, head: bool):
            if not self._host_ok():
                return self._send(403, b"forbidden host\n", "text/plain; charset=utf-8", head=head)
            path = urlsplit(self.path).path
            try:
                if path in ("/", "/index.html"):
                    results, problems = load(runs_dir)
                    meta = {"command": f"bench dashboard --runs-dir {runs_dir}", "runs_dir": runs_dir,
                            "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
                    body = render_page(results, problems, meta, static=False).encode()
                    return self._send(200, body, "text/html; charset=utf-8", head=head,
                                      extra={"Cache-Control": "no-store"})
                if path == "/" + PLOTLY_ASSET:
                    if "plotly" not in assets:
                        assets["plotly"] = _plotly_js()
                    return self._send(200, assets["plotly"], "text/javascript; charset=utf-8", head=head,
                                      extra={"Cache-Control": "max-age=86400"})
                m = re.fullmatch(f"/api/run/({RUN_ID.pattern})", path)
                if m:
                    results, _ = load(runs_dir)
                    found = next((r for r in results if r["_id"] == m.group(1)), None)
                    if found is None:
                        return self._not_found(head)
                    body = json.dumps(_clean(run_details(found)), default=str, allow_nan=False).encode()
                    return self._send(200, body, "application/json", head=head, extra={"Cache-Control": "no-store"})
            except Exception as exc:     # a bad runs dir or result: say so, never a traceback with paths
                if not quiet:
                    sys.stderr.write(f"bench dashboard: error serving {path!r}: {type(exc).__name__}: {exc}\n")
                return self._send(500, b"internal error: see the server's log\n", "text/plain; charset=utf-8",
                                  head=head)
            return self._not_found(head)

        def do_GET(self):
            self._serve(head=False)

        def do_HEAD(self):
            self._serve(head=True)

        def _refuse(self):
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only: GET and HEAD only\n", "text/plain; charset=utf-8",
                       extra={"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

        def __getattr__(self, name):     # any other method (PROPFIND, ...): 405 too, not http.server's 501
            if name.startswith("do_"):
                return self._refuse
            raise AttributeError(name)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    if ":" in host:
        import socket

        Server.address_family = socket.AF_INET6
    return Server((host, port), Handler)
