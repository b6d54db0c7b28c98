"""#18: Redis over TLS with a private CA and an ACL user, as production runs it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.codec import encode_batch
from service.runtime import build_store
from service.settings import Settings
from tests.support import ses
from tests.support.fold import events_of
from tests.support.servers import free_port, wait_for_port
from tests.support.tls import make_certificates

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    directory = tmp_path_factory.mktemp("tls-redis")
    ca, certificate, key = make_certificates(directory)
    port = free_port()
    process = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(certificate), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
            "--save", "", "--dir", str(directory),
            # An ACL user with a password, and the default user off.
            "--user", "tracker", "on", ">s3cret-pass", "~*", "&*", "+@all",
            "--user", "default", "off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield port, ca
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_rediss_with_a_private_ca_and_an_acl_user(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    url = f"rediss://tracker:s3cret-pass@127.0.0.1:{port}/0"
    store = build_store(Settings(_env_file=None, redis_url=url, redis_ca_file=ca, cache_ttl_s=0))
    try:
        assert await store.ping()
        await store.merge(encode_batch(list(events_of([ses.send("tls-1", ["a@x.com"])])), 1))
        assert (await store.get("tls-1")).status() == "sent"
    finally:
        await store.close()


async def test_without_the_ca_the_store_is_unreachable_not_insecure(
    tls_redis: tuple[int, Path],
) -> None:
    port, _ = tls_redis
    url = f"rediss://tracker:s3cret-pass@127.0.0.1:{port}/0"
    store = build_store(Settings(_env_file=None, redis_url=url, cache_ttl_s=0))
    try:
        assert not await store.ping()  # the certificate is not trusted
    finally:
        await store.close()
