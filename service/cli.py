"""The ``ses-tracker`` command: serve, demo, replay, loadgen, check-rules, check-forward,
lookup, export."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import uvicorn

import service
from service.settings import (
    Settings,
    SettingsError,
    load_settings,
    misspelt_prefixes,
    split_list,
    startup_problems,
)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ses-tracker",
        description="Live state and latencies for email sent through Amazon SES.",
    )
    parser.add_argument("--version", action="version", version=f"ses-tracker {service.__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the API and every configured consumer")
    _server_flags(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="serve, plus simulated SES traffic")
    _server_flags(demo)
    demo.add_argument("--rate", type=float, default=20.0, help="simulated messages per second")
    demo.add_argument("--seed", type=int, default=None, help="seed for repeatable traffic")
    demo.add_argument(
        "--allow-existing-data",
        action="store_true",
        help="seed and simulate into a Redis that already holds data the demo did not write",
    )
    demo.set_defaults(run=_demo)

    replay = commands.add_parser(
        "replay",
        help="feed saved events (JSON, NDJSON, Firehose/S3 dumps, gzip, folders) into the store",
    )
    replay.add_argument("paths", nargs="+", type=Path, metavar="FILE")
    replay.add_argument("--redis-url", help="store to write to (SES_TRACKER_REDIS_URL)")
    replay.add_argument(
        "--dry-run", action="store_true", help="only parse and report; store nothing"
    )
    replay.add_argument(
        "--force",
        action="store_true",
        help="replay files this store has replayed before (their history may count twice)",
    )
    replay.set_defaults(run=_replay)

    load = commands.add_parser(
        "loadgen", help="send realistic SES traffic to Kafka, SQS or a running service"
    )
    load.add_argument("--to", choices=("kafka", "sqs", "http"), required=True)
    load.add_argument(
        "--target", required=True, help="Kafka bootstrap servers, SQS queue URL or service URL"
    )
    load.add_argument("--topic", default="ses-events", help="Kafka topic")
    load.add_argument("--partitions", type=int, help="create the Kafka topic with this many")
    load.add_argument(
        "--rate", type=float, default=100.0, help="messages per second; 0: all at once"
    )
    load.add_argument("--duration", type=float, help="seconds to run")
    load.add_argument("--messages", type=int, help="messages to make")
    load.add_argument("--seed", type=int, default=None)
    load.add_argument("--endpoint-url", help="SQS endpoint (SES_TRACKER_AWS_ENDPOINT_URL)")
    load.set_defaults(run=_loadgen)

    rules = commands.add_parser(
        "check-rules", help="check an alert rules file (default: SES_TRACKER_ALERT_RULES)"
    )
    rules.add_argument("path", nargs="?", type=Path, metavar="FILE")
    rules.set_defaults(run=_check_rules)

    forward = commands.add_parser(
        "check-forward",
        help="check a forwarding subscriptions file (default: SES_TRACKER_FORWARD_FILE)",
    )
    forward.add_argument("path", nargs="?", type=Path, metavar="FILE")
    forward.set_defaults(run=_check_forward)

    test_alert = commands.add_parser(
        "test-alert", help="post a test alert to every configured sink, and say how each went"
    )
    test_alert.set_defaults(run=_test_alert)

    migrate = commands.add_parser(
        "migrate",
        help="bring the Redis data format up to this version in place (serve does it at "
        "start-up); runs every step again, folding in what older replicas wrote since",
    )
    migrate.add_argument("--redis-url", help="Redis to migrate (SES_TRACKER_REDIS_URL)")
    migrate.set_defaults(run=_migrate)

    lookup = commands.add_parser("lookup", help="print one message's state from a running service")
    lookup.add_argument("message_id")
    lookup.add_argument("--url", help="service base URL (default: from HOST/PORT settings)")
    lookup.set_defaults(run=_lookup)

    export = commands.add_parser(
        "export", help="write every message a search matches, as CSV or NDJSON, from a service"
    )
    export.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    export.add_argument("--output", "-o", type=Path, help="file to write (default: stdout)")
    export.add_argument("--url", help="service base URL (default: from HOST/PORT settings)")
    for name in EXPORT_FILTERS:
        export.add_argument("--" + name.replace("_", "-"), dest=name)
    export.add_argument("--overdue", action="store_true", help="only overdue messages")
    export.set_defaults(run=_export)
    for command in commands.choices.values():
        command.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        help="processes serving one port, each a Kafka group member and SQS poller; "
        "a number or 'auto' (one per core); more than one needs Redis (SES_TRACKER_WORKERS)",
    )
    parser.add_argument("--host", help="listen address (SES_TRACKER_HOST)")
    parser.add_argument("--port", type=int, help="listen port (SES_TRACKER_PORT)")
    parser.add_argument("--redis-url", help="Redis for durable state (SES_TRACKER_REDIS_URL)")
    parser.add_argument("--log-level", help="debug, info, warning, error (SES_TRACKER_LOG_LEVEL)")


def _settings(args: argparse.Namespace) -> Settings | None:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("host", "port", "redis_url", "log_level", "workers")
        if getattr(args, name, None) is not None
    }
    return _load_settings(**overrides)


def _load_settings(**overrides: Any) -> Settings | None:
    """The settings, or None after naming every problem on stderr (exit 2 then):
    invalid values, names no setting has, secrets that guard nothing (fail closed:
    ``settings.startup_problems``). A name under a misspelt prefix is warned about."""
    import os

    from dotenv import dotenv_values

    dotenv = dotenv_values(".env") if Path(".env").is_file() else {}
    for warning in misspelt_prefixes(os.environ, dotenv):
        sys.stderr.write(f"ses-tracker: warning: {warning}\n")
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        problems = exc.problems
    else:
        problems = startup_problems(settings, os.environ, dotenv)
    if problems:
        sys.stderr.write("ses-tracker: invalid settings\n")
        sys.stderr.writelines(f"  {problem}\n" for problem in problems)
        return None
    if "metrics_require_token" in settings.model_fields_set:
        sys.stderr.write(
            "ses-tracker: warning: SES_TRACKER_METRICS_REQUIRE_TOKEN is deprecated and "
            "ignored: /metrics is served on the admin port only (SES_TRACKER_ADMIN_PORT); "
            "remove it, it stops being a setting in the next release\n"
        )
    return settings


def _serve(args: argparse.Namespace, *, demo: bool = False) -> int:
    from api.admin import AdminListenError, listen_tcp
    from api.app import create_app
    from service import logs
    from service.runtime import tune_gc

    settings = _settings(args)
    if settings is None:
        return 2
    logs.configure(settings.log_level, settings.secret_values())
    if not _alert_settings_valid(settings) or not _forward_settings_valid(settings):
        return 2
    if not _exposure_settings_valid(settings):
        return 2
    workers = settings.worker_count()
    if workers > 1:
        if demo:
            sys.stderr.write("ses-tracker: demo runs one worker (its store is in memory)\n")
            return 2
        if not settings.redis_url:
            sys.stderr.write(
                "ses-tracker: SES_TRACKER_WORKERS > 1 needs SES_TRACKER_REDIS_URL: workers "
                "share state, statistics, alerts and the live feed through Redis\n"
            )
            return 2
    # The admin port, this process's or, with workers, their parent's; demo (a
    # try-out on a laptop) listens on it only when asked.
    wanted = settings.admin_port and (not demo or "admin_port" in settings.model_fields_set)
    try:
        admin = listen_tcp(settings.host, settings.admin_port) if wanted else None
    except AdminListenError as exc:
        sys.stderr.write(f"ses-tracker: {exc}\n")
        return 1
    if workers > 1:
        return _serve_workers(settings, workers, admin)
    tune_gc()
    on_start = None
    if demo:
        from service.traffic.simulator import run_simulator, seed_history

        if settings.tag_dimensions is None:
            # The simulated marketing mail is tagged by campaign: break it down so.
            settings = settings.model_copy(update={"tag_dimensions": "campaign"})

        async def simulate(runtime: Any) -> None:
            await seed_history(runtime.pipeline, seed=args.seed)
            await run_simulator(runtime.pipeline, messages_per_s=args.rate, seed=args.seed)

        def on_start(runtime: Any) -> None:
            runtime.spawn("simulator", simulate(runtime))

    app = create_app(settings, on_start=on_start, admin_listener=admin)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
        # The app reads the proxy headers itself (api.app), after noting the TCP peer.
        proxy_headers=False,
    )
    server = DrainingServer(config, app)
    server.run()
    return 0 if server.started else 1


def _exposure_settings_valid(settings: Settings) -> bool:
    """Listening beyond this machine: the names it answers to must be known (exit 2
    otherwise), and without an API token anyone who reaches it may change state."""
    import structlog

    from api.hosts import exposure_problem, is_loopback_bind

    problem = exposure_problem(settings)
    if problem is not None:
        sys.stderr.write(f"ses-tracker: {problem}\n")
        return False
    log = structlog.get_logger(__name__)
    if not is_loopback_bind(settings.host) and settings.api_token is None:
        log.warning(
            "open_on_the_network",
            host=settings.host,
            risk="no SES_TRACKER_API_TOKEN: anyone who reaches this address can read every "
            "message and recipient, post events (a forged bounce suppresses an address) "
            "and erase data; set SES_TRACKER_API_TOKEN",
        )
    if "*" in split_list(settings.forwarded_allow_ips):
        log.warning(
            "every_peer_trusted_as_a_proxy",
            risk="FORWARDED_ALLOW_IPS=* believes the leftmost X-Forwarded-For entry, which "
            "clients write: rate limits can be dodged; name the proxy's CIDR instead",
        )
    return True


def _serve_workers(settings: Settings, workers: int, admin_sock: socket.socket | None) -> int:
    """N worker processes on one listening socket, as uvicorn's supervisor runs them.

    Each worker is a whole ``serve`` (API, consumers, alerting): with Redis they are
    replicas on one host, so Kafka splits partitions between them, SQS pollers
    multiply, one of them holds the alert lease, and every websocket follows every
    worker's transitions through the Redis stream. A worker that dies is replaced.
    The settings reach the workers through the environment (flags included).

    This process serves the admin port (``admin_sock``, None when off) for all of
    them (``api.fleet``): each worker answers on a Unix socket in a private
    directory, and this process adds up.
    """
    import os
    import shutil

    import structlog
    from uvicorn.supervisors import Multiprocess

    from api.fleet import (
        SOCKETS_ENV,
        FleetAdmin,
        Workers,
        create_fleet_app,
        reload_every_worker,
    )

    # What flags set, as the settings the workers read: the rest is already there.
    flagged = {"HOST": settings.host, "PORT": str(settings.port),
               "REDIS_URL": settings.redis_url, "LOG_LEVEL": settings.log_level}  # fmt: skip
    for name, value in flagged.items():
        os.environ[f"SES_TRACKER_{name}"] = str(value)
    config = uvicorn.Config(
        "service.cli:worker_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=20,
        proxy_headers=False,  # as in _serve: the app reads them
    )
    structlog.get_logger(__name__).info(
        "workers_starting", workers=workers, port=settings.port, admin_port=settings.admin_port
    )
    listener = config.bind_socket()  # exits when taken: before anything is made
    sockets = _worker_sockets_dir() if admin_sock is not None else None

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            """SIGHUP re-reads the rules and forwarding files in every worker, as
            ``POST /-/reload`` and a single ``serve`` do (uvicorn's own answer,
            replacing every worker, is what it does without an admin port)."""
            if sockets is None:
                super().handle_hup()
                return
            log = structlog.get_logger(__name__)
            try:
                outcomes = reload_every_worker(sockets, [p.pid or 0 for p in self.processes])
            except Exception:  # the supervisor's loop must go on whatever a reload does
                log.exception("workers_reload_failed")
                return
            log.info("workers_reloaded", outcomes=outcomes)

    supervisor = Supervisor(config, sockets=[listener])
    admin = None
    try:
        if admin_sock is not None and sockets is not None:
            os.environ[SOCKETS_ENV] = str(sockets)
            fleet = Workers(sockets, lambda: [p.pid or 0 for p in list(supervisor.processes)])
            admin = FleetAdmin(create_fleet_app(fleet), admin_sock)
            admin.start()
        supervisor.run()
    finally:
        if admin is not None:
            admin.stop()
        if sockets is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    return 0


def _worker_sockets_dir() -> Path:
    """A private directory (0700) for the workers' admin sockets, short enough that
    ``<dir>/<pid>.sock`` fits a Unix socket's path (108 bytes on Linux)."""
    import tempfile

    longest = len("/4194304.sock")  # the largest pid Linux gives
    base = tempfile.gettempdir()
    if len(base) + len("/ses-tracker-xxxxxxxx") + longest >= 100:
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="ses-tracker-", dir=base))


def worker_app() -> Any:
    """One worker's app (``serve --workers``): settings from the environment; its
    admin routes on its own socket in the parent's directory (``api.fleet``)."""
    import os

    from api.admin import listen_unix
    from api.app import create_app
    from api.fleet import SOCKETS_ENV, socket_of
    from service import logs
    from service.runtime import tune_gc

    settings = load_settings()
    logs.configure(settings.log_level, settings.secret_values())
    tune_gc()
    directory = os.environ.get(SOCKETS_ENV)
    admin = listen_unix(socket_of(Path(directory), os.getpid())) if directory else None
    return create_app(settings, admin_listener=admin)


class DrainingServer(uvicorn.Server):
    """uvicorn, but a drained SIGTERM/SIGINT exits 0, and SIGHUP reloads.

    uvicorn re-raises the signal once it has shut down, so the process dies of
    SIGTERM even after a clean drain; orchestrators then report a crash. Here the
    handlers are installed the same way and simply restored afterwards.

    SIGHUP re-reads the rules and forwarding files, as ``POST /-/reload`` does
    (``service.reload``; systemd's ``ExecReload=``). The handler only notes it:
    the reload runs on the event loop at uvicorn's next tick (a tenth of a second).
    """

    def __init__(self, config: uvicorn.Config, app: Any = None) -> None:
        super().__init__(config)
        self._app = app
        self._reload_asked = False
        self._reloads: set[Any] = set()

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handlers = {signal.SIGINT: self.handle_exit, signal.SIGTERM: self.handle_exit}
        if self._app is not None:
            handlers[signal.SIGHUP] = self._ask_reload
        original = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _ask_reload(self, sig: int, frame: Any) -> None:
        self._reload_asked = True

    async def on_tick(self, counter: int) -> bool:
        if self._reload_asked:
            self._reload_asked = False
            runtime = getattr(self._app.state, "runtime", None) if self._app else None
            if runtime is not None:
                import asyncio

                reload = runtime.config_files.reload(actor="signal")
                task = asyncio.create_task(reload, name="sighup-reload")
                self._reloads.add(task)  # held until done (the loop keeps weak references)
                task.add_done_callback(self._reloads.discard)
        return await super().on_tick(counter)


def _alert_settings_valid(settings: Settings) -> bool:
    from service.alerts.config import AlertConfigError, alert_config

    try:
        alert_config(settings)
    except AlertConfigError as exc:
        for problem in str(exc).splitlines():
            sys.stderr.write(f"ses-tracker: {problem}\n")
        return False
    return True


def _forward_settings_valid(settings: Settings) -> bool:
    from service.forward.config import ForwardConfigError, load_subscriptions

    try:
        load_subscriptions(settings.forward_file)
    except ForwardConfigError as exc:
        for problem in str(exc).splitlines():
            sys.stderr.write(f"ses-tracker: {problem}\n")
        return False
    return True


def _check_forward(args: argparse.Namespace) -> int:
    """Validate a forwarding file and print its subscriptions (no URL, no secret)."""
    from service.forward.config import ForwardConfigError, describe, load_subscriptions

    settings = _load_settings()
    if settings is None:
        return 2
    path = args.path or settings.forward_file
    if path is None:
        sys.stderr.write("ses-tracker: no file: pass one, or set SES_TRACKER_FORWARD_FILE\n")
        return 2
    try:
        subscriptions = load_subscriptions(path)
    except ForwardConfigError as exc:
        sys.stderr.write(f"ses-tracker: {exc}\n")
        return 2
    sys.stdout.write(orjson.dumps(describe(subscriptions), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")
    return 0


def _check_rules(args: argparse.Namespace) -> int:
    """Validate a rules file and print the rules as they will run (defaults filled in)."""
    from service.alerts.rules import RulesError, load_rules

    settings = _load_settings()
    if settings is None:
        return 2
    path = args.path or settings.alert_rules
    try:
        rules = load_rules(path, settings.dimensions())
    except RulesError as exc:
        sys.stderr.write(f"ses-tracker: {exc}\n")
        return 2
    sys.stdout.write(
        orjson.dumps(rules.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode()
    )
    sys.stdout.write("\n")
    return 0


def _test_alert(args: argparse.Namespace) -> int:
    """Post one test alert to each sink of SES_TRACKER_ALERT_WEBHOOKS: exit 0 when
    every sink took it, 1 when one did not, 2 on bad settings or no sinks."""
    import asyncio

    from service import logs
    from service.alerts.config import AlertConfigError, alert_config
    from service.alerts.delivery import Deliverer
    from service.alerts.model import Alert, AlertState, Example, Severity
    from service.clock import wall_clock_ms

    settings = _load_settings()
    if settings is None:
        return 2
    logs.configure("warning", settings.secret_values())
    try:
        config = alert_config(settings)
    except AlertConfigError as exc:
        sys.stderr.write(f"ses-tracker test-alert: {exc}\n")
        return 2
    if not config.sinks:
        sys.stderr.write("ses-tracker test-alert: SES_TRACKER_ALERT_WEBHOOKS names no sink\n")
        return 2
    alert = Alert(
        key="test-alert",
        rule="test",
        severity=Severity.WARNING,
        state=AlertState.FIRING,
        title="ses-tracker test alert",
        summary="A test from `ses-tracker test-alert`: this sink receives ses-tracker's alerts.",
        started_at=wall_clock_ms(),
        figures={"sent by": "ses-tracker test-alert"},
        worst={},
        examples=(Example("test-message-id", None, None),),
        link=settings.public_url,
    )

    async def post_all() -> list[tuple[str, str | None]]:
        from service.outbound import Outbound

        client = Outbound.from_environ(allow_private=True)  # as the service posts
        deliverer = Deliverer(client, secret=config.secret, attempts=2, max_wait_s=5.0)
        outcomes = []
        try:
            for sink in config.sinks:
                try:
                    await deliverer.send(sink, alert)
                    outcomes.append((sink.name, None))
                except Exception as exc:  # each sink's outcome is reported, none stops the rest
                    outcomes.append((sink.name, str(exc) or type(exc).__name__))
        finally:
            await deliverer.aclose()
        return outcomes

    failed = 0
    for name, error in asyncio.run(post_all()):
        # The sink's kind and host only: its URL is a credential.
        sys.stdout.write(f"{name}: {'delivered' if error is None else 'FAILED: ' + error}\n")
        failed += error is not None
    return 1 if failed else 0


def _loadgen(args: argparse.Namespace) -> int:
    import asyncio
    import random

    from service import logs
    from service.traffic.loadgen import (
        HttpTarget,
        KafkaTarget,
        SqsTarget,
        Target,
        UsageError,
        generate,
    )

    settings = _load_settings()
    if settings is None:
        return 2
    logs.configure(settings.log_level, settings.secret_values())
    target: Target
    if args.to == "kafka":
        target = KafkaTarget(args.target, args.topic, args.partitions)
    elif args.to == "sqs":
        endpoint = args.endpoint_url or settings.aws_endpoint_url
        target = SqsTarget(args.target, endpoint, random.Random(args.seed))
    else:
        token = settings.api_token.get_secret_value() if settings.api_token else None
        target = HttpTarget(args.target, token)
    try:
        report = asyncio.run(
            generate(
                target,
                rate=args.rate,
                messages=args.messages,
                duration_s=args.duration,
                seed=args.seed,
            )
        )
    except UsageError as exc:  # checked before anything is sent
        sys.stderr.write(f"ses-tracker loadgen: {exc}\n")
        return 2
    summary = {
        "messages": report.messages,
        "events": report.events,
        "seconds": round(report.seconds, 3),
        "events_per_s": round(report.events_per_s),
        "warnings": list(report.warnings),
    }
    sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    return 0


def _demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings is None:
        return 2
    if settings.redis_url and not _demo_may_write(settings, args.allow_existing_data):
        return 2
    return _serve(args, demo=True)


def _demo_may_write(settings: Settings, allowed: bool) -> bool:
    """The demo writes 89 days of invented history and live traffic: into an empty
    Redis or one it seeded before, or, with ``--allow-existing-data``, anywhere."""
    import asyncio

    from service.runtime import build_keyspace
    from service.traffic.simulator import SEEDED_MARK

    async def holds() -> tuple[bool, bool]:
        keyspace = build_keyspace(settings)
        assert keyspace is not None
        try:
            seeded = bool(await keyspace.client.exists(keyspace.keys.replayed(SEEDED_MARK)))
            async for _key in keyspace.client.scan_iter(match=f"{keyspace.prefix}*", count=100):
                return True, seeded
            return False, seeded
        finally:
            await keyspace.close()

    try:
        data, seeded = asyncio.run(holds())
    except Exception as exc:
        sys.stderr.write(f"ses-tracker demo: cannot check the Redis first ({type(exc).__name__})\n")
        return False
    if data and not seeded and not allowed:
        sys.stderr.write(
            "ses-tracker demo: this Redis already holds data the demo did not write; the "
            "demo adds 89 days of invented history and simulated traffic to it. Use an "
            "empty Redis, or pass --allow-existing-data to write there anyway.\n"
        )
        return False
    if data or seeded:
        sys.stderr.write(
            "ses-tracker demo: warning: writing simulated traffic into a Redis that holds "
            "data (history seeded once, marked)\n"
        )
    return True


# replay's exit codes
REPLAY_REJECTED = 1
USAGE = 2
STORE_UNAVAILABLE = 3


def _replay(args: argparse.Namespace) -> int:
    """Replay into the configured Redis: exit 0 when all was read, 1 when a record
    was rejected, 2 on bad usage, 3 when the store could not be reached (what was
    merged before stays; replaying again is safe)."""
    import asyncio

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from consumers.replay import input_files, replay
    from service import logs
    from service.pipeline import Pipeline
    from service.runtime import build_store, tune_gc

    settings = _load_settings(**({"redis_url": args.redis_url} if args.redis_url else {}))
    if settings is None:
        return 2
    logs.configure("error", settings.secret_values())  # the summary says what went wrong
    console = Console(stderr=True)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        console.print(f"ses-tracker replay: no such file: {', '.join(missing)}")
        return 2
    if not settings.redis_url and not args.dry_run:
        console.print(
            "ses-tracker replay: set SES_TRACKER_REDIS_URL (or --redis-url) to keep the "
            "replayed state, or pass --dry-run to only check the files"
        )
        return 2
    tune_gc()
    total = sum(path.stat().st_size for path in input_files(args.paths))

    async def run() -> Any:
        # A backfill is history, not news: nothing of it is forwarded to apps.
        store = build_store(settings.model_copy(update={"forward_file": None}))
        pipeline = Pipeline(
            store,
            max_payload_bytes=settings.max_body_bytes,
            live_stats=False,
            dimensions=settings.dimensions(),
            history_days=settings.history_days,
            hourly_days=settings.history_hourly_days,
        )
        columns = (
            *Progress.get_default_columns()[:1],
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=console, transient=True) as progress:
                task = progress.add_task("replaying", total=total or None)
                return await replay(
                    args.paths,
                    pipeline,
                    on_progress=lambda n: progress.advance(task, n),
                    dry_run=args.dry_run,
                    force=args.force,
                )
        finally:
            await store.close()

    from service.stores import StoreUnavailable

    try:
        report = asyncio.run(run())
    except StoreUnavailable as exc:
        console.print(f"ses-tracker replay: the store is unavailable ({exc}); run it again")
        return STORE_UNAVAILABLE
    counters = report.counters
    table = Table(title=f"replayed {report.files} file(s), {report.bytes:,} bytes")
    table.add_column("outcome")
    table.add_column("records", justify="right")
    label = "readable events (dry run: not stored)" if args.dry_run else "accepted events"
    table.add_row(label, f"{report.events:,}")
    table.add_row("ignored (no delivery state)", f"{counters.ignored:,}")
    table.add_row("rejected", f"{counters.rejected:,}")
    for reason, count in counters.reasons.most_common():
        table.add_row(f"  rejected: {reason}", f"{count:,}")
    Console().print(table)
    if report.skipped:
        console.print(
            f"skipped {len(report.skipped)} file(s) replayed before (same content; --force "
            f"replays them, and their history may then count twice): "
            + ", ".join(str(path) for path in report.skipped[:5])
            + (" ..." if len(report.skipped) > 5 else ""),
            markup=False,
            highlight=False,
        )
    for rejection in report.rejections:
        console.print(f"{rejection.where()}: {rejection.reason}", markup=False, highlight=False)
    if counters.rejected > len(report.rejections):
        console.print(f"(the first {len(report.rejections)} rejections shown)")
    return REPLAY_REJECTED if counters.rejected else 0


def _migrate(args: argparse.Namespace) -> int:
    """Exit 0 once the data is in this version's format, 2 on bad usage or a newer
    format, 3 when Redis could not be reached (running it again is safe)."""
    import asyncio

    from service import logs
    from service.runtime import build_keyspace, build_redis_store
    from service.stores import StoreUnavailable
    from service.stores.redis.store import FORMAT_VERSION, StoreFormatError

    settings = _load_settings(**({"redis_url": args.redis_url} if args.redis_url else {}))
    if settings is None:
        return 2
    logs.configure(settings.log_level, settings.secret_values())
    if not settings.redis_url:
        sys.stderr.write("ses-tracker migrate: set SES_TRACKER_REDIS_URL (or --redis-url)\n")
        return 2

    async def run() -> int:
        keyspace = build_keyspace(settings)
        assert keyspace is not None
        redis = build_redis_store(settings.model_copy(update={"forward_file": None}), keyspace)
        try:
            found = await redis.claim_format(rerun=True)
        finally:
            await redis.close()
        sys.stderr.write(f"ses-tracker migrate: format {found} -> {FORMAT_VERSION}\n")
        return 0

    try:
        return asyncio.run(run())
    except StoreFormatError as exc:
        sys.stderr.write(f"ses-tracker migrate: {exc}\n")
        return 2
    except StoreUnavailable as exc:
        sys.stderr.write(f"ses-tracker migrate: {exc}\n")
        return 3


def _service(settings: Settings, url: str | None) -> tuple[str, dict[str, str]]:
    """A running service's base URL (``--url``, else HOST/PORT) and the headers its
    API needs (the token, when one is set)."""
    base = url or f"http://{settings.host}:{settings.port}"
    headers = {}
    if settings.api_token is not None:
        headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
    return base, headers


def _lookup(args: argparse.Namespace) -> int:
    settings = _load_settings()
    if settings is None:
        return 2
    base, headers = _service(settings, args.url)
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


# The search filters of GET /v1/messages that `export` passes on (README, HTTP API).
EXPORT_FILTERS = (
    "recipient",
    "status",
    "since",
    "until",
    "configuration_set",
    "identity",
    "provider",
    "domain",
    "tag",
    "bounce_type",
)


def _export(args: argparse.Namespace) -> int:
    """Stream ``GET /v1/messages?format=`` from a running service to a file or stdout,
    with a progress counter on stderr."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    settings = _load_settings()
    if settings is None:
        return 2
    base, headers = _service(settings, args.url)
    params: dict[str, str] = {"format": args.format}
    params.update({name: getattr(args, name) for name in EXPORT_FILTERS if getattr(args, name)})
    if args.overdue:
        params["overdue"] = "true"
    console = Console(stderr=True)
    out = args.output.open("wb") if args.output else sys.stdout.buffer
    lines = 0
    try:
        with (
            httpx.stream(
                "GET", f"{base.rstrip('/')}/v1/messages", params=params, headers=headers,
                timeout=httpx.Timeout(30, read=300),
            ) as response,
            Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                console=console, transient=True,
            ) as progress,
        ):  # fmt: skip
            if response.status_code != 200:
                response.read()
                sys.stderr.write(f"ses-tracker export: {response.status_code} {response.text}\n")
                return 1
            task = progress.add_task("exporting")
            for chunk in response.iter_bytes():
                out.write(chunk)
                lines += chunk.count(b"\n")
                progress.update(task, description=f"exporting: {lines:,} lines")
    except httpx.HTTPError as exc:
        sys.stderr.write(f"ses-tracker export: cannot read from {base}: {exc}\n")
        return 2
    finally:
        if args.output:
            out.close()
    unit = "rows (header included)" if args.format == "csv" else "messages"
    console.print(f"ses-tracker export: {lines:,} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
