"""The admin port of ``serve --workers N``: the parent answers for all its workers.

Each worker serves the admin routes (``api.admin``) on a Unix socket of its own,
``<dir>/<pid>.sock`` in a directory only this user can enter, made by the parent
and named to the workers in ``SES_TRACKER_WORKER_SOCKETS``. The parent serves the
admin port and asks every live worker (the supervisor's list, so a replaced
worker's socket is never asked):

* ``GET /metrics``: one scrape, the workers' added up (``service.fleet_metrics``),
  plus ``ses_tracker_workers`` and ``ses_tracker_workers_answering``;
* ``GET /healthz``: ``200`` while this process serves and at least one worker
  answers its own (a worker being replaced, after a crash or a SIGHUP, must not
  fail the pod's liveness probe; uvicorn's supervisor replaces one that hangs);
* ``GET /readyz``: every worker's answer, whole, under ``workers`` by pid, with its
  sources; ``200`` when at least one answered and every one that answered is ready
  (a worker being replaced takes no connections meanwhile);
* ``POST /-/reload``: every worker re-reads its files; ``200`` when all did.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import structlog
from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from api.admin import admin_server, bare_admin_app
from api.responses import OrjsonResponse
from service.fleet_metrics import FleetMetrics

log = structlog.get_logger(__name__)

SOCKETS_ENV = "SES_TRACKER_WORKER_SOCKETS"
# A worker slower than this to answer is counted as not answering this time: under
# the probes' own timeout (the manifests give 3 s).
ASK_TIMEOUT_S = 2.0
# A reload applies the files in every worker: allow it longer.
RELOAD_TIMEOUT_S = 30.0


def socket_of(directory: Path, pid: int) -> Path:
    return directory / f"{pid}.sock"


class Workers:
    """Asks every live worker the same question over its admin socket."""

    def __init__(self, directory: Path, pids: Callable[[], list[int]]) -> None:
        self.directory = directory
        self.pids = pids
        self.scrape_failures = 0
        # One client per live worker, kept between questions (a client costs a TLS
        # context to make, even for a Unix socket).
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self, pid: int) -> httpx.AsyncClient:
        client = self._clients.get(pid)
        if client is None:
            transport = httpx.AsyncHTTPTransport(uds=str(socket_of(self.directory, pid)))
            client = httpx.AsyncClient(transport=transport, base_url="http://worker")
            self._clients[pid] = client
        return client

    async def ask(
        self, method: str, path: str, timeout_s: float = ASK_TIMEOUT_S
    ) -> dict[int, httpx.Response | str]:
        """Each live worker's answer, or why there was none, by pid."""
        pids = [pid for pid in self.pids() if pid]
        for gone in set(self._clients) - set(pids):
            client = self._clients.pop(gone, None)  # another question may have closed it
            if client is not None:
                await client.aclose()

        async def one(pid: int) -> httpx.Response | str:
            try:
                return await self._client(pid).request(method, path, timeout=timeout_s)
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

        answers = await asyncio.gather(*(one(pid) for pid in pids))
        return dict(zip(pids, answers, strict=True))

    async def aclose(self) -> None:
        for client in list(self._clients.values()):
            await client.aclose()
        self._clients.clear()


def reload_answers(answers: dict[int, httpx.Response | str]) -> tuple[dict[str, Any], list[str]]:
    """Each worker's answer to ``POST /-/reload`` by pid, and the pids that did not
    reload (an error answer, or none)."""
    by_pid: dict[str, Any] = {}
    failed = []
    for pid, answer in answers.items():
        if isinstance(answer, httpx.Response):
            by_pid[str(pid)] = _json(answer)
            if answer.status_code != 200:
                failed.append(str(pid))
        else:
            by_pid[str(pid)] = {"error": answer}
            failed.append(str(pid))
    return by_pid, failed


def create_fleet_app(workers: Workers) -> FastAPI:
    app = bare_admin_app()
    fleet_metrics = FleetMetrics()
    # One round at a time (two Prometheus replicas, a probe and a scrape): a slow
    # round must not land after a newer one and bring back a retired worker.
    scraping = asyncio.Lock()

    @app.get("/metrics")
    async def metrics() -> Response:
        async with scraping:
            answers = await workers.ask("GET", "/metrics")
            scrapes = {}
            for pid, answer in answers.items():
                if isinstance(answer, httpx.Response) and answer.status_code == 200:
                    scrapes[pid] = answer.text
                else:
                    workers.scrape_failures += 1
            body, unreadable = await asyncio.to_thread(
                fleet_metrics.answer, scrapes, answers.keys(), own(len(answers), scrapes)
            )
            workers.scrape_failures += len(unreadable)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def own(live: int, scrapes: dict[int, str]) -> list[Metric]:
        running = GaugeMetricFamily(
            "ses_tracker_workers", "Worker processes serve --workers runs now."
        )
        running.add_metric([], live)
        answering = GaugeMetricFamily(
            "ses_tracker_workers_answering", "Workers that answered this scrape."
        )
        answering.add_metric([], len(scrapes))
        failures = CounterMetricFamily(
            "ses_tracker_worker_scrape_failures",
            "Worker scrapes that got no answer, or none that could be read (that worker's "
            "totals count as last seen).",
        )
        failures.add_metric([], workers.scrape_failures)
        return [running, answering, failures]

    @app.get("/healthz")
    async def healthz() -> OrjsonResponse:
        answers = await workers.ask("GET", "/healthz")
        by_pid = {str(pid): _state(answer) for pid, answer in answers.items()}
        healthy = any(state == "ok" for state in by_pid.values())
        return OrjsonResponse(
            {"status": "ok" if healthy else "unhealthy", "workers": by_pid},
            status_code=200 if healthy else 503,
        )

    @app.get("/readyz")
    async def readyz() -> OrjsonResponse:
        answers = await workers.ask("GET", "/readyz")
        by_pid: dict[str, Any] = {}
        ready = []
        for pid, answer in answers.items():
            if isinstance(answer, httpx.Response):
                body = _json(answer)
                by_pid[str(pid)] = body
                ready.append(answer.status_code == 200)
            else:
                by_pid[str(pid)] = {"status": "not answering", "error": answer}
        is_ready = bool(ready) and all(ready)
        body = {
            "status": "ready" if is_ready else "unavailable",
            "store": is_ready,
            "workers": by_pid,
        }
        return OrjsonResponse(body, status_code=200 if is_ready else 503)

    @app.post("/-/reload")
    async def reload() -> OrjsonResponse:
        answers = await workers.ask("POST", "/-/reload", RELOAD_TIMEOUT_S)
        by_pid, failed = reload_answers(answers)
        if failed or not answers:
            error = f"workers {', '.join(failed)} kept their running configuration"
            if not answers:
                error = "no worker answered"
            return OrjsonResponse({"error": error, "workers": by_pid}, status_code=422)
        return OrjsonResponse({"workers": by_pid})

    return app


def _state(answer: httpx.Response | str) -> str:
    if isinstance(answer, str):
        return f"not answering: {answer}"
    return "ok" if answer.status_code == 200 else f"answered {answer.status_code}"


def _json(answer: httpx.Response) -> Any:
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        return {"status": f"answered {answer.status_code}", "error": "not JSON"}


class FleetAdmin:
    """The fleet app on the admin socket, in a thread of the supervisor process
    (whose main thread runs uvicorn's supervisor and its signals)."""

    def __init__(self, app: FastAPI, sock: Any) -> None:
        self._server = admin_server(app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="admin", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


def reload_every_worker(directory: Path, pids: list[int]) -> dict[str, Any]:
    """``POST /-/reload`` to each worker from the supervisor's own thread (its
    SIGHUP), asked as the admin port asks, on an event loop of its own: by pid,
    "reloaded" or what the worker answered instead. Blocking, bounded by the timeout."""

    async def ask() -> dict[int, httpx.Response | str]:
        workers = Workers(directory, lambda: pids)
        try:
            return await workers.ask("POST", "/-/reload", RELOAD_TIMEOUT_S)
        finally:
            await workers.aclose()

    by_pid, failed = reload_answers(asyncio.run(ask()))
    return {pid: answer if pid in failed else "reloaded" for pid, answer in by_pid.items()}
