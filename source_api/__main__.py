"""``python -m source_api``: run the source API alone (``quartet source-api`` calls this)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from source_api.faults import FaultPlan
from source_api.server import SourceAPI, make_server

#: where the API reads the bearer token it accepts
TOKEN_ENV = "SOURCE_API_TOKEN"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quartet source-api", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--as-of", help="publish only what was published by this date (YYYY-MM-DD)")
    p.add_argument("--scale", type=int, default=1, help="replicate 2013 into N years")
    p.add_argument("--fault-rate", type=float, default=0.0, help="share of requests that fail")
    p.add_argument("--fault-seed", type=int, default=0)
    p.add_argument(
        "--malform",
        action="append",
        default=[],
        help="<resource>:<wrong_type|missing_key|bad_value>:<YYYY-MM-DD> (tests)",
    )
    p.add_argument(
        "--token",
        default=None,
        help=f"bearer token (default: ${TOKEN_ENV}; a command line is readable by every local "
        "user, the environment is not)",
    )
    p.add_argument("--access-log", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"source-api: no token: set {TOKEN_ENV} (or --token)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        api = SourceAPI(
            token=token,
            as_of=args.as_of,
            scale=args.scale,
            faults=FaultPlan(rate=args.fault_rate, seed=args.fault_seed),
            malformed=args.malform,
        )
    except ValueError as exc:
        print(f"source-api: {exc}", file=sys.stderr)
        return 2
    server = make_server(api, args.host, args.port, access_log=args.access_log)
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # nothing to save: stop at once
    print(f"SOURCE_API_URL=http://{host}:{port}", flush=True)
    print(
        f"source-api: {sum(len(t) for t in api.tables.values()):,} records (scale {args.scale}) "
        f"as of {api.as_of()}, ready in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
