"""``bench dashboard``: serve the leaderboard of a runs folder as one interactive page (bench/dashboard.py).

Registers the command only; the server and page live in bench/dashboard.py, imported when the
command runs (building the parser imports nothing heavy).
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8050


def _port(text: str) -> int:
    import argparse

    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}")
    return int(text)


def cmd_dashboard(args) -> int:
    from bench.dashboard import LOOPBACK
    from bench.dashboard_server import make_server

    if not Path(args.runs_dir).is_dir():
        raise ConfigError(f"runs directory {args.runs_dir!r} does not exist; give the folder `bench run --runs-dir` "
                          f"wrote to (default: runs)")
    if args.host not in LOOPBACK:
        print(f"bench dashboard: warning: binding {args.host}, not 127.0.0.1: anyone who can reach this machine "
              f"on port {args.port} can read the leaderboard, configs and curves of {args.runs_dir} (read-only, "
              f"no authentication)", file=sys.stderr)
    try:
        server = make_server(args.runs_dir, args.host, args.port, quiet=args.quiet)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}; "
                          f"choose another with --port (0: any free port)") from None
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"bench dashboard: serving {args.runs_dir} on http://{shown}:{port}/ (read-only; Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve the leaderboard as an interactive page (read-only, localhost)",
                       description="Serve one leaderboard page for a runs folder, recomputed from its result.json "
                                   "files on every load: ranked, sortable, filterable tables per task with the "
                                   "paper's values, learning curves (mean ± std over seeds), and each run's "
                                   "config, reproducing command, curves and diagnostics. Read-only (GET/HEAD).")
    p.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help="address to bind (default: 127.0.0.1, this machine only; another address is reachable "
                        "by others and prints a warning)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help="port (default: 8050; 0: any free port)")
    p.add_argument("--quiet", action="store_true", help="no request log on stderr")
    p.set_defaults(func=cmd_dashboard)
