"""The package outside the checkout: build the wheel, install it into a fresh virtualenv in
another folder, and use it there as a user would: generate, run, get, keys, serve."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def uv() -> str:
    """The uv that `make setup` installs (or one on PATH)."""
    local = REPO / ".venv-tools" / "bin" / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (run `make setup`)")
    return found


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    """Run a command; fail the test with its output when it fails."""
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A fresh virtualenv outside the checkout with only the built wheel installed (its
    dependencies at the versions of uv.lock), and an environment that cannot see the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"}
        and not k.startswith("METRICS_ETL_")
    }
    env["PREFECT_HOME"] = str(root / "prefect-home")
    run([uv(), "build", "--wheel", "--out-dir", str(root / "dist"), str(REPO)], root, env)
    wheel = next((root / "dist").glob("metrics_etl-*.whl"))
    constraints = root / "constraints.txt"
    run(
        [uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project",
         "--quiet", "-o", str(constraints)],
        REPO,
        env,
    )  # fmt: skip
    venv = root / "venv"
    run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], root, env)
    run(
        [uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "--compile-bytecode", "-c", str(constraints), str(wheel)],
        root,
        env,
    )  # fmt: skip
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return root, env


def test_the_wheel_installs_and_runs_outside_the_checkout(
    installed: tuple[Path, dict[str, str]],
) -> None:
    root, env = installed
    home = root / "elsewhere"
    home.mkdir()
    where = run(["python", "-c", "import metrics_etl; print(metrics_etl.__file__)"], home, env)
    assert not Path(where.strip()).is_relative_to(REPO), where  # the wheel's copy, not src/

    run(["metrics-etl", "generate", "--events", "2000"], home, env)
    out = run(["metrics-etl", "run"], home, env)
    assert "published snapshot" in out, out
    stats = json.loads(
        run(["metrics-etl", "sql", "--format", "json", "select count(*) as n from fct_reads"],
            home, env)
    )  # fmt: skip
    assert stats[0]["n"] > 0

    channel, account = json.loads(
        run(
            ["metrics-etl", "sql", "--format", "json",
             "select c.channel_id, c.account_id from dim_channels c join fct_reads r "
             "using (channel_id) where not c.is_deleted group by all order by count(*) desc "
             "limit 1"],
            home,
            env,
        )
    )[0].values()  # fmt: skip
    path = (
        f"/api/v4/analytics/reports_read?channel_id={channel}&start_date=2000-01-01"
        "&end_date=2100-01-01&fields=total_reads"
    )
    body = json.loads(run(["metrics-etl", "get", "--account-id", str(account), path], home, env))
    assert body["total_reads"] > 0

    key = run(["metrics-etl", "keys", "create", "--account-id", str(account)], home, env)
    secret = key.strip().splitlines()[-1].strip()
    port = free_port()
    server = subprocess.Popen(
        ["metrics-etl", "serve", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}{path}",
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=10,
                )
                break
            except httpx.TransportError:
                assert server.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not answer within 60 s"
                time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert answer.json() == body
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
