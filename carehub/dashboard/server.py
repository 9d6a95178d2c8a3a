"""`carehub dashboard`: one practice's page over HTTP, from the partner gateway, with the practice's certificate.

Routes: ``/`` the page (HTML), ``/data.json`` what the page was drawn from (the same reads).
When the gateway cannot be reached the page says so with HTTP 503 (502 when it refuses or fails
the request), never a traceback and never older figures. The server binds 127.0.0.1 by default:
it has no login and no TLS of its own, and the page holds the practice's case list.

Responses carry ``Cache-Control: no-store`` and a Content-Security-Policy that allows nothing but
the page's own inline style and SVG, so the browser fetches nothing else.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Before grpc loads: gRPC core's info lines (each failed connection) are not for this process's log.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from carehub.dashboard.page import PageContext, render_error, render_page
from carehub.dashboard.sections import SECTIONS
from carehub.dashboard.source import GatewaySource, org_of_certificate
from carehub.partner import PartnerClient, PartnerError, PartnerUnavailable

log = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
RETRY_AFTER_S = 5


def _failure(exc: PartnerError) -> tuple[int, bool]:
    """(HTTP status, unavailable?) for a failed gateway read: 503 when it cannot be reached, else 502."""
    unavailable = isinstance(exc, PartnerUnavailable)
    return (503 if unavailable else 502), unavailable


def make_app(source: GatewaySource, org: str, name: str, gateway: str) -> Starlette:
    """The web app of one practice's page, reading through ``source``."""

    def page(request: Request) -> Response:  # a plain function: starlette runs it in its thread pool
        try:
            snapshot = source.snapshot()
        except PartnerError as exc:
            status, unavailable = _failure(exc)
            log.warning("page: gateway read failed (%s)", type(exc).__name__)
            ctx = PageContext(org=org, name=name, gateway=gateway, read_at=datetime.now(UTC))
            headers = dict(HEADERS, **({"Retry-After": str(RETRY_AFTER_S)} if unavailable else {}))
            return HTMLResponse(render_error(ctx, str(exc), unavailable), status_code=status, headers=headers)
        ctx = PageContext(org=org, name=name, gateway=gateway, read_at=snapshot.read_at)
        parts = [(s.id, s.title, s.render(snapshot.data[s.id], ctx)) for s in source.sections]
        return HTMLResponse(render_page(ctx, parts), headers=HEADERS)

    def data(request: Request) -> Response:
        try:
            snapshot = source.snapshot()
        except PartnerError as exc:
            status, unavailable = _failure(exc)
            return JSONResponse({"org": org, "error": str(exc), "gateway_unavailable": unavailable},
                                status_code=status, headers=HEADERS)
        body: dict[str, Any] = {"org": org, "read_at": snapshot.read_at.isoformat()}
        body.update({s.id: s.as_json(snapshot.data[s.id]) for s in source.sections})
        return Response(json.dumps(body, sort_keys=True), media_type="application/json", headers=HEADERS)

    return Starlette(routes=[Route("/", page, methods=["GET"]), Route("/data.json", data, methods=["GET"])])


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise SystemExit(f"carehub dashboard: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    """`carehub dashboard`: serve the page of the practice named by --cert until Ctrl-C or SIGTERM."""
    try:
        org = org_of_certificate(Path(args.cert))
        client = PartnerClient(args.gateway, ca_file=Path(args.ca), cert_file=Path(args.cert),
                               key_file=Path(args.key), server_name=args.server_name or None,
                               timeout=args.timeout, retries=1)
    except PartnerError as exc:
        raise SystemExit(f"carehub dashboard: {exc}") from None
    source = GatewaySource(client, SECTIONS, cache_s=args.cache_s)
    app = make_app(source, org, args.name or org, args.gateway)
    sock = _listen(args.host, args.port)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    if not _loopback(args.host):
        print(f"warning: the page (with the practice's case list) is served without login or TLS on {args.host}: "
              "anyone who can reach that address can read it", file=sys.stderr, flush=True)
    print(f"dashboard of {org}: http://{host}:{port}/ (from the gateway at {args.gateway}; Ctrl-C stops)",
          flush=True)
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning", timeout_keep_alive=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        source.close()
    return 0

