"""`ses-tracker` as a real child process, for tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.servers import free_port


def clean_environment(admin_port: int | None = None) -> dict[str, str]:
    """This environment without any SES_TRACKER_* name, but for an admin port of
    its own (a free one unless given): never the shared default, 9000."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SES_TRACKER_")}
    environment["SES_TRACKER_ADMIN_PORT"] = str(admin_port or free_port())
    return environment


def listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (from /proc: its socket inodes, then
    the kernel's listening table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def command() -> list[str]:
    script = Path(sys.executable).parent / "ses-tracker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


class Service:
    """A running `ses-tracker` process; its stderr (the JSON log) goes to a file."""

    def __init__(
        self, process: subprocess.Popen, base: str, log_path: Path, admin: str | None = None
    ) -> None:
        self.process = process
        self.base = base
        self.admin = admin  # the admin port's base, when the command serves one
        self.log_path = log_path

    def logs(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout_s: float = 40) -> int:
        """SIGTERM, then the exit status. ``timeout_s``: the drain the service
        promises (sources 15 s, then HTTP 20 s) with a little room, as its
        orchestrators give it (systemd TimeoutStopSec=40, Kubernetes 45 s)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=timeout_s)
        self.stopped_in_s = time.monotonic() - started
        return status

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[Service]:
    port, admin_port = free_port(), free_port()
    environment = clean_environment(admin_port)
    environment.update(env or {}, SES_TRACKER_PORT=str(port))
    with tempfile.TemporaryDirectory() as workdir:
        log_path = Path(workdir) / "stderr.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [*command(), *args], env=environment, stdout=subprocess.DEVNULL, stderr=log_file
            )
        admin = environment["SES_TRACKER_ADMIN_PORT"]
        admin_base = f"http://127.0.0.1:{admin}" if admin != "0" else None
        service = Service(process, f"http://127.0.0.1:{port}", log_path, admin_base)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{service.base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start: {service.logs()[-2000:]}")
                time.sleep(0.1)
            yield service
        finally:
            if process.poll() is None:
                service.kill()
