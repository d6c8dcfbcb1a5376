"""A real `metrics-etl serve` process on a free port of 127.0.0.1, for tests over real HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

START_S = 60


@dataclass
class Served:
    """A running server: its base URL, process and log file (stdout and stderr)."""

    url: str
    process: subprocess.Popen
    log: Path

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        """A GET request to the server."""
        return httpx.get(self.url + path, timeout=30, **kwargs)  # type: ignore[arg-type]

    def log_text(self) -> str:
        """What the server has logged so far."""
        return self.log.read_text(errors="replace")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(warehouse: Path, log: Path) -> Iterator[Served]:
    """Start `metrics-etl serve` over a warehouse, wait until it answers /healthz, stop it after."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("metrics-etl")), "serve"]
    command += ["--warehouse", str(warehouse), "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + START_S
        while True:
            assert process.poll() is None, f"the server exited: {served.log_text()}"
            try:
                if served.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /healthz within {START_S} s"
            time.sleep(0.1)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(served: Served, seconds: float = 60) -> dict:
    """Poll /readyz until it answers 200; its body."""
    deadline = time.monotonic() + seconds
    while True:
        response = served.get("/readyz")
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 503, response.text
        assert time.monotonic() < deadline, f"not ready within {seconds} s"
        time.sleep(0.1)
