"""``streamtune monitor``: the monitoring consumer and its live web dashboard.

Composition root of the monitor process: a :class:`~streamtune.monitor.feed.Feed` folds
every topic into a :class:`~streamtune.monitor.state.MonitorState`; an aiohttp server on
one port serves

- ``/``: the dashboard (Plotly, served from the installed ``plotly`` package: no CDN);
- ``/api/state``: the picture as JSON, which the page polls;
- ``/metrics`` and ``/healthz``: as every streamtune process.

It binds ``STREAMTUNE_HTTP_HOST`` (loopback unless set) and, when ``STREAMTUNE_MONITOR_TOKEN``
is set, the dashboard and ``/api/state`` answer only a request that presents the token
(``Authorization: Bearer <token>`` or ``?token=<token>``; the page passes it on to
``/api/state``). ``/metrics``, ``/healthz`` and the static scripts stay open: they hold no
stream data, and Prometheus and healthchecks need them.

Its own liveness follows its own lag: records in the topics it has not folded yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

import plotly
from aiohttp import web

from schemas.messages import Alert, Prediction
from streamtune.core.observability import Liveness, Metrics, http_app, serve_http
from streamtune.core.settings import Settings
from streamtune.monitor.feed import Feed, group_lags, history_start, new_state

log = logging.getLogger(__name__)

#: Newest points of each series sent to the page: enough for an hour at one per second.
PAGE_POINTS = 3600
#: What ``monitor_token`` guards: the pages that show the stream's data.
GUARDED_PATHS = frozenset({"/", "/api/state"})


def presents(request: web.Request, token: str) -> bool:
    """Whether ``request`` carries ``token`` as a bearer header or a ``token`` query item."""
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
    if given is None:
        given = request.query.get("token", "")
    return hmac.compare_digest(given.encode(), token.encode())  # constant time


def token_guard(token: str) -> Any:
    """An aiohttp middleware: 401 on :data:`GUARDED_PATHS` unless the request presents
    ``token``."""

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path in GUARDED_PATHS and not presents(request, token):
            raise web.HTTPUnauthorized(
                text="this monitor needs its token (Authorization: Bearer, or ?token=)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await handler(request)

    return guard


def url_of(runner: web.AppRunner) -> str:
    """Where ``runner`` really listens, as a URL.

    >>> url_of(type("R", (), {"addresses": [("0.0.0.0", 8090)]})())
    'http://0.0.0.0:8090/'
    """
    host, port = runner.addresses[0][:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def plotly_js() -> Path:
    """plotly.js as the installed ``plotly`` package ships it."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class Monitor:
    """One monitor. ``await Monitor(settings, port).run(stop_event)``."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        self.settings = settings
        self.port = settings.monitor_port if port is None else port
        self.state = new_state(settings.monitor)
        self.state.listener = self._count
        self.metrics = Metrics()
        self.liveness = Liveness(settings.health_stall_s, self.metrics)
        self.feed = Feed(settings, self.state, history_start(settings))
        self.ready = asyncio.Event()
        self.url: str | None = None  # where the dashboard listens, once it does

    def _count(self, topic: str, message: Any) -> None:
        self.metrics.events.labels(outcome=topic).inc()
        if isinstance(message, Prediction):
            self.metrics.latency.observe(message.latency_ms / 1000)
        elif isinstance(message, Alert):
            self.metrics.alerts.labels(kind=message.kind).inc()

    def routes(self) -> web.RouteTableDef:
        routes = web.RouteTableDef()
        page = resources.files("streamtune.monitor").joinpath("static")

        @routes.get("/")
        async def index(request: web.Request) -> web.Response:
            html = page.joinpath("dashboard.html").read_text("utf-8")
            return web.Response(text=html, content_type="text/html")

        @routes.get("/static/dashboard.js")
        async def script(request: web.Request) -> web.Response:
            js = page.joinpath("dashboard.js").read_text("utf-8")
            return web.Response(text=js, content_type="application/javascript")

        @routes.get("/static/plotly.min.js")
        async def plotly_file(request: web.Request) -> web.FileResponse:
            return web.FileResponse(plotly_js(), headers={"Cache-Control": "max-age=86400"})

        @routes.get("/api/state")
        async def api_state(request: web.Request) -> web.Response:
            snap = self.state.snapshot(max_points=PAGE_POINTS)
            snap["prefix"] = self.settings.topic_prefix
            snap["health"] = self.liveness.health.__dict__
            return web.json_response(snap)

        return routes

    async def run(self, stop: asyncio.Event) -> None:
        await self.feed.start()
        app = http_app(self.metrics, self.liveness, self.routes())
        token = self.settings.dashboard_token()
        if token is not None:
            app.middlewares.append(token_guard(token))
        try:
            await self.feed.catch_up()
            async with serve_http(app, self.port, self.settings.http_host) as runner:
                self.url = url_of(runner) if runner is not None else None
                self.ready.set()
                await asyncio.gather(self._follow(stop), self._sample(stop))
        finally:
            await self.feed.stop()

    async def _follow(self, stop: asyncio.Event) -> None:
        refreshed = time.monotonic()
        while not stop.is_set():
            records = await self.feed.poll(timeout_ms=250)
            self.liveness.record(len(records))
            for task, version in self.state.live.items():
                self.metrics.set_live_adapter(task, version)
            if time.monotonic() - refreshed > 10:  # topics made after the start
                refreshed = time.monotonic()
                await self.feed.refresh_topics()

    async def _sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                lags = await asyncio.wait_for(group_lags(self.settings), 30)
                self.state.set_lag(lags, int(time.time() * 1000))
                for group, value in lags.items():
                    self.metrics.lag.labels(group=group).set(value)
                self.liveness.observe_lag(await self.feed.lag())
            except Exception as exc:  # the broker may blink; the dashboard goes on
                log.warning("lag sample failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.health_interval_s)
