"""#26: the one outbound helper against receivers that cost a sender, and against
the environment: bounded replies, one deadline, no .netrc, the proxy and the CA
from HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE, and a connection to the address the
egress check vetted with the URL's name kept for Host and TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import service.outbound as outbound
from service.outbound import MAX_REPLY_BYTES, Outbound, OutboundFailed
from tests.support.hostile import GIB, HostileReceiver
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

JSON = {"content-type": "application/json"}


async def test_a_receiver_replying_a_gibibyte_is_read_to_4_kib_and_costs_little() -> None:
    async with HostileReceiver("flood") as receiver:
        client = Outbound.from_environ(environ={}, deadline_s=5.0)
        tracemalloc.start()
        try:
            started = time.monotonic()
            reply = await client.post(receiver.base + "/hook", b"{}", JSON)
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await client.aclose()
        # Let the receiver see the hang-up.
        for _ in range(100):
            if receiver.closed:
                break
            await asyncio.sleep(0.02)
    assert reply.status == 200 and len(reply.body) == MAX_REPLY_BYTES
    assert elapsed < 2.0
    # About 0.4 MB once warm (httpcore reads 64 KiB at a time); first-use imports add
    # some. The whole reply was 1 GiB, and reading it took 2.1 GB on the base.
    assert peak < 4 << 20, f"the post allocated {peak} bytes at its peak"
    # What the socket buffers took before the hang-up, nowhere near the gibibyte.
    assert receiver.sent_bytes < 64 << 20 < GIB
    assert receiver.closed == 1


async def test_a_dripping_receiver_is_cut_off_at_the_deadline() -> None:
    async with HostileReceiver("drip", drip_s=0.05) as receiver:
        client = Outbound.from_environ(environ={})
        started = time.monotonic()
        with pytest.raises(OutboundFailed, match=r"no answer within 0\.6 s"):
            await client.post(receiver.base + "/hook", b"{}", JSON, deadline_s=0.6)
        elapsed = time.monotonic() - started
        await client.aclose()
        assert receiver.sent_bytes > 5  # it was dripping, never silent
    # httpx's per-read timeout (10 s here) never trips on a drip; the deadline does.
    assert 0.6 <= elapsed < 1.2


async def test_only_the_contracts_variables_are_read_not_netrc_nor_all_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login robot password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(netrc))
    async with Proxy().running() as proxy, Receiver() as receiver:
        for name in ("ALL_PROXY", "HTTP_PROXY"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        # The test can fail: a client that trusts the environment goes to the proxy.
        async with httpx.AsyncClient() as trusting:
            await trusting.post(receiver.base + "/hook", content=b"{}")
        assert len(proxy.lines) == 1
        client = Outbound.from_environ()
        reply = await client.post(receiver.base + "/hook", b"{}", JSON)
        await client.aclose()
    assert reply.ok and len(proxy.lines) == 1
    assert "authorization" not in receiver.received[-1].headers


class Proxy:
    """Takes one request and refuses it (502), keeping its request line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.lines.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Proxy]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()


async def test_https_proxy_carries_posts_except_to_no_proxy_hosts() -> None:
    async with Proxy().running() as proxy:
        environ = {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}", "NO_PROXY": "direct.test"}
        client = Outbound.from_environ(environ=environ, deadline_s=3.0)
        try:
            # A name this machine cannot resolve is the proxy's to resolve.
            with pytest.raises(OutboundFailed, match="ProxyError"):
                await client.post("https://hooks.example.test/hook", b"{}", JSON)
            assert proxy.lines == ["CONNECT hooks.example.test:443 HTTP/1.1"]
            # What resolves here is vetted here, proxy or not.
            with pytest.raises(OutboundFailed, match="not a public address"):
                await client.post("https://10.0.0.7/hook", b"{}", JSON)
            assert len(proxy.lines) == 1
            # NO_PROXY: straight out, so resolved here (and it does not resolve).
            with pytest.raises(OutboundFailed, match="cannot resolve"):
                await client.post("https://hooks.direct.test/hook", b"{}", JSON)
            assert len(proxy.lines) == 1
        finally:
            await client.aclose()


def localhost_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for the name ``localhost`` only (no address in it):
    it verifies only if TLS is given the URL's name, not the address connected to."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outbound test CA")])

    def build(subject: x509.Name, public_key, ca: bool) -> x509.CertificateBuilder:  # type: ignore[no-untyped-def]
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )

    ca = build(ca_name, ca_key.public_key(), True).sign(ca_key, hashes.SHA256())
    leaf = (
        build(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
            key.public_key(),
            False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "leaf.pem", directory / "leaf.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_ssl_cert_file_verifies_a_private_ca_under_the_urls_name(tmp_path: Path) -> None:
    ca, leaf, key = localhost_certificates(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(leaf, key)
    hosts: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        hosts.extend([line.split(":", 1)[1].strip() for line in head.split("\r\n")
                      if line.lower().startswith("host:")])  # fmt: skip
        length = int(next((line.split(":")[1] for line in head.split("\r\n")
                           if line.lower().startswith("content-length:")), "0"))  # fmt: skip
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    url = f"https://localhost:{port}/hook"
    try:
        trusting = Outbound.from_environ(environ={"SSL_CERT_FILE": str(ca)}, deadline_s=5.0)
        reply = await trusting.post(url, b"{}", JSON)
        await trusting.aclose()
        assert reply.status == 204
        assert hosts == [f"localhost:{port}"]
        # Without the CA, the same receiver is not trusted.
        default = Outbound.from_environ(environ={}, deadline_s=5.0)
        with pytest.raises(OutboundFailed, match="ConnectError"):
            await default.post(url, b"{}", JSON)
        await default.aclose()
    finally:
        server.close()


async def test_the_connection_goes_to_the_address_that_was_vetted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"hooks.example.test": ["127.0.0.1"], "rebind.example.test": ["10.0.0.7"]}
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return answers[host]

    monkeypatch.setattr(outbound, "resolve", resolve)
    async with Receiver() as receiver:
        # Allowed private (an alert sink): the one look-up's address is where it goes,
        # while Host still names the URL's host.
        client = Outbound.from_environ(environ={}, allow_private=True)
        reply = await client.post(f"http://hooks.example.test:{receiver.port}/h", b"{}", JSON)
        await client.aclose()
        assert reply.ok and lookups == ["hooks.example.test"]
        assert receiver.received[-1].headers["host"] == f"hooks.example.test:{receiver.port}"
        # Not allowed: refused before any connection, on that same single look-up.
        strict = Outbound.from_environ(environ={})
        with pytest.raises(OutboundFailed, match=r"10\.0\.0\.7, which is not a public"):
            await strict.post(f"http://rebind.example.test:{receiver.port}/h", b"{}", JSON)
        await strict.aclose()
        assert lookups == ["hooks.example.test", "rebind.example.test"]
        assert len(receiver.received) == 1
