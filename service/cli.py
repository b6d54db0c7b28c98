"""The ``ses-tracker`` command: serve, demo, lookup."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import uvicorn

from service.settings import Settings, unavailable_features


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ses-tracker",
        description="Live state and latencies for email sent through Amazon SES.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API and every configured consumer")
    _server_flags(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="serve, plus simulated SES traffic")
    _server_flags(demo)
    demo.add_argument("--rate", type=float, default=20.0, help="simulated messages per second")
    demo.add_argument("--seed", type=int, default=None, help="seed for repeatable traffic")
    demo.set_defaults(run=_demo)

    lookup = commands.add_parser("lookup", help="print one message's state from a running service")
    lookup.add_argument("message_id")
    lookup.add_argument("--url", help="service base URL (default: from HOST/PORT settings)")
    lookup.set_defaults(run=_lookup)
    return parser


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (SES_TRACKER_HOST)")
    parser.add_argument("--port", type=int, help="listen port (SES_TRACKER_PORT)")
    parser.add_argument("--redis-url", help="Redis for durable state (SES_TRACKER_REDIS_URL)")
    parser.add_argument("--log-level", help="debug, info, warning, error (SES_TRACKER_LOG_LEVEL)")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("host", "port", "redis_url", "log_level")
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    from api.app import create_app
    from service import logs
    from service.runtime import tune_gc

    settings = _settings(args)
    logs.configure(settings.log_level)
    problems = unavailable_features(settings)
    if problems:
        for problem in problems:
            sys.stderr.write(f"ses-tracker: {problem}\n")
        return 2
    tune_gc()
    on_start = None
    if demo:
        from consumers.simulator import run_simulator

        def on_start(runtime: Any) -> None:
            runtime.spawn(
                "simulator",
                run_simulator(runtime.pipeline, messages_per_s=args.rate, seed=args.seed),
            )

    app = create_app(settings, on_start=on_start)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
    )
    server = DrainingServer(config)
    server.run()
    return 0 if server.started else 1


class DrainingServer(uvicorn.Server):
    """uvicorn, but a drained SIGTERM/SIGINT exits 0.

    uvicorn re-raises the signal once it has shut down, so the process dies of
    SIGTERM even after a clean drain; orchestrators then report a crash. Here the
    handlers are installed the same way and simply restored afterwards.
    """

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _demo(args: argparse.Namespace) -> int:
    return _serve(args, demo=True)


def _lookup(args: argparse.Namespace) -> int:
    settings = Settings()
    base = args.url or f"http://{settings.host}:{settings.port}"
    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    try:
        url = f"{base.rstrip('/')}/v1/messages/{quote(args.message_id, safe='')}"
        response = httpx.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        sys.stderr.write(f"ses-tracker lookup: cannot reach {base}: {exc}\n")
        return 2
    if response.status_code != 200:
        sys.stderr.write(f"ses-tracker lookup: {response.status_code} {response.text}\n")
        return 1
    sys.stdout.write(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
