"""serve listening beyond this machine (issue #26 point 1): it must know the names it
answers to (exit 2 naming both settings otherwise), it warns when no token guards it,
and the process as started answers only those names."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.support.process import clean_environment, command, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def serve_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environment = clean_environment()
    environment.update(env)
    return subprocess.run(
        [*command(), "serve", *args], env=environment, capture_output=True, timeout=30, text=True
    )


@pytest.mark.parametrize(
    ("env", "args"),
    [({"SES_TRACKER_HOST": "0.0.0.0"}, ()), ({}, ("--host", "0.0.0.0"))],
)
def test_serve_beyond_loopback_without_known_names_exits_2_naming_both(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    result = serve_with(env, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "SES_TRACKER_PUBLIC_URL" in result.stderr
    assert "SES_TRACKER_ALLOWED_HOSTS" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_beyond_loopback_without_a_token_warns_once_and_checks_hosts() -> None:
    env = {"SES_TRACKER_HOST": "0.0.0.0", "SES_TRACKER_ALLOWED_HOSTS": "tracker.internal"}
    with running("serve", env=env) as service:
        named = httpx.get(f"{service.base}/v1/stats", headers={"Host": "tracker.internal"})
        other = httpx.get(f"{service.base}/v1/stats", headers={"Host": "evil.example"})
        service.stop()
        logs = service.logs()
    assert named.status_code == 200 and other.status_code == 400
    assert logs.count('"open_on_the_network"') == 1
    assert "SES_TRACKER_API_TOKEN" in logs


def test_serve_on_loopback_or_with_a_token_does_not_warn() -> None:
    with running("serve") as service:
        service.stop()
        assert "open_on_the_network" not in service.logs()
    token = {
        "SES_TRACKER_HOST": "0.0.0.0",
        "SES_TRACKER_PUBLIC_URL": "https://tracker.example.com",
        "SES_TRACKER_API_TOKEN": "exposure-test-token-0123456789",
    }
    with running("serve", env=token) as service:
        service.stop()
        assert "open_on_the_network" not in service.logs()
