from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import RedisTarget
from tests.support.servers import MotoServer, RedisClusterServers, RedisServer, TansuBroker

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def seeds_dir() -> Path:
    return DATA / "seeds"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """Three masters on loopback, started the first time a test needs them."""
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that takes redis_target runs on one Redis and on a cluster, unless
    # it reads the one-Redis key layout itself (marked single_redis).
    if "redis_target" in metafunc.fixturenames:
        single_only = metafunc.definition.get_closest_marker("single_redis") is not None
        kinds = ["single"] if single_only else ["single", "cluster"]
        metafunc.parametrize("redis_target", kinds, indirect=True)


@pytest.fixture
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    return RedisTarget.of(request.param, request)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    broker = TansuBroker(tmp_path_factory.mktemp("tansu") / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    """Fake credentials for moto; the real ones (if any) never leave this machine."""
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_AWS_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


@pytest.fixture(scope="session")
def moto_server(aws_credentials: None) -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
