"""Settings a first deploy gets wrong: every problem named, no traceback, exit 2."""

from __future__ import annotations

import os
import subprocess

import pytest

from service.settings import load_settings
from tests.support.process import command, running

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def serve_with(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SES_TRACKER_")}
    environment.update(env)
    return subprocess.run(
        [*command(), "serve"], env=environment, capture_output=True, timeout=30, text=True
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SES_TRACKER_PORT", "abc"),
        ("SES_TRACKER_METRICS_REQUIRE_TOKEN", "maybe"),
        ("SES_TRACKER_OVERDUE_AFTER_S", "-5"),
        ("SES_TRACKER_REDIS_URL", "localhost:6379"),
        ("SES_TRACKER_LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_setting_is_named_and_exits_2(name: str, value: str) -> None:
    result = serve_with({name: value})
    assert result.returncode == 2, result.stderr[-2000:]
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    if name == "SES_TRACKER_REDIS_URL":
        assert value not in result.stderr  # values are not echoed: they may be secrets


def test_every_bad_setting_is_reported_at_once() -> None:
    result = serve_with({"SES_TRACKER_PORT": "abc", "SES_TRACKER_LOG_LEVEL": "verbose"})
    assert result.returncode == 2
    assert "SES_TRACKER_PORT" in result.stderr and "SES_TRACKER_LOG_LEVEL" in result.stderr


def test_a_misspelt_setting_is_warned_about_with_the_closest_name() -> None:
    env = {"SES_TRACKER_REDIS_URI": "redis://127.0.0.1:1/0", "SES_TRACKER_SERVICE_HOST": "10.0.0.1"}
    with running("serve", env=env) as service:
        service.stop()
        logs = service.logs()
    assert "SES_TRACKER_REDIS_URI is not a setting; did you mean SES_TRACKER_REDIS_URL?" in logs
    assert "SES_TRACKER_SERVICE_HOST" not in logs  # Kubernetes service links are tolerated
    assert '"sns_endpoint":"closed"' in logs and '"api_token":false' in logs


def test_kubernetes_service_links_do_not_break_the_port() -> None:
    assert load_settings(_env_file=None, port="tcp://10.96.0.12:8000").port == 8000


def test_version() -> None:
    import service

    result = subprocess.run([*command(), "--version"], capture_output=True, timeout=30, text=True)
    assert result.returncode == 0
    assert result.stdout.strip() == f"ses-tracker {service.__version__}"
