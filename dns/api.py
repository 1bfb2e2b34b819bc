"""The registration API on aiohttp: ``make_app`` builds it around a RegistryWriter.

    PUT    /v1/names/{name}   register or replace; body {"addresses", "ttl"?, "srv"?}
    DELETE /v1/names/{name}   remove an API name (204; 404 if there is none)
    GET    /v1/names          every name: API and container ones, with "source"
    GET    /v1/names/{name}   the entries for one name (404 if none)
    GET    /healthz           {"status": "ok", ...}
    GET    /metrics           Prometheus text format

With a token, PUT and DELETE need ``Authorization: Bearer TOKEN``. Errors
are JSON ``{"error": MESSAGE}`` with a 4xx status (503 when the store cannot
be reached); a rejected request changes nothing, because a body is validated
whole before anything is written.

Slow clients are bounded (``serve``): a body must arrive whole within
``BODY_TIMEOUT`` (else 408, and the connection closes within ``LINGER``) and be
at most ``MAX_BODY`` bytes (else 413), and a connection that sends no complete
request within ``HTTP_IDLE`` is closed.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from aiohttp import web

from netplug.dns.metrics import Metrics
from netplug.dns.records import (
    InvalidRegistration,
    decode_body,
    parse_name,
    parse_registration,
)
from netplug.dns.registry import listing
from netplug.dns.writer import RegistryWriter
from netplug.ipam.store.base import StoreError

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 10.0  # seconds for a whole request body, from its headers on
HTTP_IDLE = 15.0  # seconds a connection may wait without a complete request
# Seconds the rest of a body answered early (401, 408, 413) is read and dropped
# before the connection closes, so that the client reads the answer rather than
# a reset; aiohttp's 10 s would let a slow client hold the connection that long.
LINGER = 2.0

WRITER = web.AppKey("writer", RegistryWriter)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


async def _body(request: web.Request) -> bytes:
    """The whole body; 413 past MAX_BODY (before reading it, when announced),
    408 when it takes longer than BODY_TIMEOUT."""
    size = request.content_length
    if size is not None and size > MAX_BODY:
        raise _too_large()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the body did not arrive within {BODY_TIMEOUT:g} s: send it whole"
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None  # sent without a Content-Length


def _too_large() -> web.HTTPRequestEntityTooLarge:
    return web.HTTPRequestEntityTooLarge(
        MAX_BODY, text=f"the body is over {MAX_BODY} bytes: send at most that"
    )


def make_app(
    writer: RegistryWriter,
    *,
    domain: str = "netplug.internal",
    token: str | None = None,
    metrics: Metrics | None = None,
    health: Callable[[], dict] | None = None,
) -> web.Application:
    """The API application. ``health()`` adds fields to /healthz; ``metrics``
    backs /metrics (404 without it)."""
    domain = domain.lower().strip(".")

    @web.middleware
    async def guard(request: web.Request, handler: Callable) -> web.StreamResponse:
        if request.method in ("PUT", "DELETE", "POST", "PATCH") and token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(
                    401,
                    "this server needs 'Authorization: Bearer TOKEN' for changes",
                    **{"WWW-Authenticate": 'Bearer realm="netplug-dns"'},
                )
        try:
            return await handler(request)
        except InvalidRegistration as e:
            return _error(400, str(e))
        except web.HTTPException as e:  # aiohttp's own (404, 405, 413): JSON like ours
            if e.status < 400:
                raise
            response = _error(e.status, e.text or e.reason)
            if e.status == 408:
                response.force_close()  # RFC 9110: a 408 closes the connection
            return response
        except StoreError as e:
            return _error(503, f"the store cannot be reached, try again: {e}")

    async def put_name(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        registration = parse_registration(name, decode_body(await _body(request)), domain)
        await asyncio.to_thread(writer.put, registration)
        return web.json_response(
            {"name": f"{registration.name}.{domain}", "source": "api", **registration.record()}
        )

    async def delete_name(request: web.Request) -> web.Response:
        name = parse_name(request.match_info["name"], domain)
        if not await asyncio.to_thread(writer.delete, name):
            return _error(404, f"no API name {name}.{domain} is registered")
        return web.Response(status=204)

    async def list_names(request: web.Request) -> web.Response:
        snap = await asyncio.to_thread(writer.snapshot)
        return web.json_response({"domain": domain, "names": listing(snap, domain)})

    async def get_name(request: web.Request) -> web.Response:
        fqdn = f"{parse_name(request.match_info['name'], domain)}.{domain}"
        snap = await asyncio.to_thread(writer.snapshot)
        rows = [row for row in listing(snap, domain) if row["name"] == fqdn]
        if not rows:
            return _error(404, f"{fqdn} is not registered")
        return web.json_response({"domain": domain, "names": rows})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **(health() if health else {})})

    async def metrics_text(request: web.Request) -> web.Response:
        if metrics is None:
            return _error(404, "metrics are not enabled")
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[WRITER] = writer
    app.router.add_put("/v1/names/{name}", put_name)
    app.router.add_delete("/v1/names/{name}", delete_name)
    app.router.add_get("/v1/names", list_names)
    app.router.add_get("/v1/names/{name}", get_name)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on ``host``:``port``; the runner, to ``cleanup()`` when done.
    A connection idle for HTTP_IDLE (no request, or one whose headers trickle
    in) is closed; aiohttp's default would hold it for an hour."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=HTTP_IDLE, lingering_time=LINGER)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
