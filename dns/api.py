"""The registration API on aiohttp: ``make_app`` builds it around a RegistryWriter.

    PUT    /v1/names/{name}   register or replace; body {"addresses", "ttl"?, "srv"?}
    DELETE /v1/names/{name}   remove an API name (204; 404 if there is none)
    GET    /v1/names          every name: API and container ones, with "source"
    GET    /v1/names/{name}   the entries for one name (404 if none)
    GET    /healthz           {"status": "ok", ...} (503 when not "ok")
    GET    /metrics           Prometheus text format

With a token, PUT and DELETE need ``Authorization: Bearer TOKEN``. Errors
are JSON ``{"error": MESSAGE}`` with a 4xx status (503 when the store cannot
be reached); a rejected request changes nothing, because a body is validated
whole before anything is written.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable

from aiohttp import web

from netplug.dns.metrics import Metrics
from netplug.dns.records import InvalidRegistration, parse_name, parse_registration
from netplug.dns.registry import listing
from netplug.dns.writer import RegistryWriter
from netplug.ipam.store.base import StoreError

MAX_BODY = 64 * 1024

WRITER = web.AppKey("writer", RegistryWriter)


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


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
        except StoreError as e:
            return _error(503, f"the store cannot be reached, try again: {e}")

    async def put_name(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f'the body is not JSON ({e}): send {{"addresses": ["10.1.2.3"]}}')
        registration = parse_registration(name, body, domain)
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
        report = {"status": "ok", **(health() if health else {})}
        # Probes read the code: anything but "ok" (netplugd's "degraded") is a 503.
        return web.json_response(report, status=200 if report["status"] == "ok" else 503)

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
