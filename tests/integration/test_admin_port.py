"""#28.2: the admin port. /metrics, /healthz, the whole /readyz and POST /-/reload
on SES_TRACKER_ADMIN_PORT; the public port keeps /healthz and a redacted /readyz,
and has no /metrics. On main before this, /metrics answered on the public port and
there was no admin port: every test here failed."""

from __future__ import annotations

import socket
import subprocess
import time

import httpx
import pytest

from tests.support.process import clean_environment, command, listening_ports, running
from tests.support.servers import RedisServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "an-api-token-long-enough-for-the-rules"


def test_metrics_and_whole_readiness_are_on_the_admin_port_only(
    redis_server: RedisServer,
) -> None:
    env = {"SES_TRACKER_REDIS_URL": redis_server.url, "SES_TRACKER_API_TOKEN": TOKEN}
    with running("serve", env=env) as service:
        assert service.admin is not None
        assert httpx.get(f"{service.base}/metrics", timeout=5).status_code == 404
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{service.base}/metrics", headers=bearer, timeout=5).status_code == 404
        scrape = httpx.get(f"{service.admin}/metrics", timeout=5)
        assert scrape.status_code == 200 and "ses_tracker_dependency_up" in scrape.text
        # Public: the store's address only with a token; admin: always, no token.
        public = httpx.get(f"{service.base}/readyz", timeout=5).json()
        assert public["store_kind"] == "RedisStore"
        admin = httpx.get(f"{service.admin}/readyz", timeout=5).json()
        assert f"127.0.0.1:{redis_server.port}" in admin["store_kind"]
        assert httpx.get(f"{service.admin}/healthz", timeout=5).json() == {"status": "ok"}
        # The admin port checks no Host (probes and scrapes come by pod IP), and
        # serves nothing of the API.
        foreign = {"Host": "attacker.example"}
        assert httpx.get(f"{service.admin}/metrics", headers=foreign, timeout=5).status_code == 200
        assert httpx.get(f"{service.admin}/v1/stats", timeout=5).status_code == 404
        assert httpx.get(f"{service.admin}/", timeout=5).status_code == 404
        # Reload is the admin port's: the public port has no such route.
        assert httpx.post(f"{service.admin}/-/reload", timeout=5).json() == {"files": []}
        assert httpx.post(f"{service.base}/-/reload", headers=bearer, timeout=5).status_code in {
            404,
            405,
        }
        assert service.stop() == 0


def test_admin_port_zero_turns_it_off() -> None:
    with running("serve", env={"SES_TRACKER_ADMIN_PORT": "0"}) as service:
        assert service.admin is None
        assert httpx.get(f"{service.base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{service.base}/metrics", timeout=5).status_code == 404
        # It listens on its public port and nothing else (port 0 is no ephemeral port).
        public = int(service.base.rsplit(":", 1)[1])
        assert listening_ports(service.process.pid) == {public}
        assert service.stop() == 0
    with running("serve") as service:  # and the same check sees an admin port
        admin = int(str(service.admin).rsplit(":", 1)[1])
        assert listening_ports(service.process.pid) == {int(service.base.rsplit(":", 1)[1]), admin}
        assert service.stop() == 0


def test_the_admin_port_refuses_browsers() -> None:
    """No Host check there (probes and scrapes come by address), so a page, on
    another site or reached by DNS rebinding, must not read it through a browser."""
    with running("serve") as service:
        assert httpx.get(f"{service.admin}/readyz", timeout=5).status_code == 200
        for header in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Mode": "cors"},
                       {"Sec-Fetch-Mode": "navigate"}):  # fmt: skip
            for method, path in (("GET", "/readyz"), ("GET", "/metrics"), ("POST", "/-/reload")):
                answer = httpx.request(method, f"{service.admin}{path}", headers=header, timeout=5)
                assert answer.status_code == 403, (header, path)
                assert answer.json() == {"error": "the admin port answers tools, not browsers"}
        assert service.stop() == 0


def test_the_demo_listens_on_the_admin_port_only_when_asked() -> None:
    environment = clean_environment()
    del environment["SES_TRACKER_ADMIN_PORT"]
    # The default admin port must stay closed for a demo: take it to prove it.
    default = socket.socket()
    try:
        default.bind(("127.0.0.1", 9000))
    except OSError:
        pytest.skip("port 9000 is taken on this machine: the default cannot be checked")
    default.listen()
    try:
        port = free_port()
        process = subprocess.Popen(
            [*command(), "demo", "--port", str(port), "--rate", "1"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(timeout=20)
    finally:
        default.close()


def test_an_admin_port_in_use_or_equal_to_the_port_stops_serve_saying_so() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        environment = clean_environment(taken.getsockname()[1])
        environment["SES_TRACKER_PORT"] = str(free_port())
        result = subprocess.run(
            [*command(), "serve"], env=environment, capture_output=True, text=True, timeout=30
        )
    finally:
        taken.close()
    assert result.returncode == 1
    assert "cannot listen on the admin port" in result.stderr
    assert "SES_TRACKER_ADMIN_PORT" in result.stderr and "Traceback" not in result.stderr

    port = free_port()
    environment = clean_environment(port)
    environment["SES_TRACKER_PORT"] = str(port)
    result = subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "SES_TRACKER_ADMIN_PORT is SES_TRACKER_PORT" in result.stderr


def test_metrics_require_token_is_accepted_ignored_and_warned_about() -> None:
    env = {"SES_TRACKER_METRICS_REQUIRE_TOKEN": "true", "SES_TRACKER_API_TOKEN": TOKEN}
    with running("serve", env=env) as service:
        # Ignored: the admin port answers without a token.
        assert httpx.get(f"{service.admin}/metrics", timeout=5).status_code == 200
        assert service.stop() == 0
        assert "SES_TRACKER_METRICS_REQUIRE_TOKEN is deprecated and ignored" in service.logs()
