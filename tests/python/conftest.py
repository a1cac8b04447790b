"""Fixtures: the real jimini binary and its built-in mock upstream on ephemeral loopback ports."""
import os
import socket
import subprocess
import tempfile
import time
import shutil
import pathlib

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("JIMINI_BIN", str(ROOT / "target" / "debug" / "jimini"))


def free_ports(n: int) -> list[int]:
    """n distinct loopback ports: all held bound until every one is picked (a released port can
    come back from the next bind to port 0, and one port given to both the proxy and the admin
    listener puts the admin API where the proxy should be)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} never opened")


class Stack:
    def __init__(self, rules: dict | None = None, chunk_chars: int = 4, extra: str = ""):
        self.tmp = tempfile.mkdtemp(prefix="jimini-py-")
        self.mock_port, self.proxy_port, self.admin_port = free_ports(3)
        self.mock = subprocess.Popen(
            [BIN, "mock-upstream", "--listen", f"127.0.0.1:{self.mock_port}",
             "--chunk-chars", str(chunk_chars)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.mock_port, self.mock)
        rules_dir = pathlib.Path(self.tmp) / "rules"
        rules_dir.mkdir()
        if rules is None:
            for f in (ROOT / "rules").glob("*.yaml"):
                shutil.copy(f, rules_dir / f.name)
        else:
            for name, text in rules.items():
                (rules_dir / name).write_text(text)
        cfg = pathlib.Path(self.tmp) / "jimini.yaml"
        cfg.write_text(
            f"listen: 127.0.0.1:{self.proxy_port}\n"
            "server:\n  threads: 2\n  grace_period_secs: 0\n  shutdown_timeout_secs: 1\n"
            f"admin:\n  listen: 127.0.0.1:{self.admin_port}\n"
            f"upstreams:\n  - name: mock\n    base_url: http://127.0.0.1:{self.mock_port}\n"
            f"rules:\n  dir: {rules_dir}\n"
            f"audit:\n  dir: {pathlib.Path(self.tmp) / 'audit'}\n"
            f"{extra}\n")
        self.log = open(pathlib.Path(self.tmp) / "jimini.log", "wb")
        self.proxy = subprocess.Popen([BIN, "serve", "-c", str(cfg)], stdout=self.log, stderr=self.log)
        wait_port(self.proxy_port, self.proxy)
        wait_port(self.admin_port, self.proxy)
        self.base_url = f"http://127.0.0.1:{self.proxy_port}/v1"
        self.mock_url = f"http://127.0.0.1:{self.mock_port}"

    def upstream_requests(self) -> list:
        return httpx.get(self.mock_url + "/mock/requests").json()["data"]

    def clear_upstream(self) -> None:
        httpx.delete(self.mock_url + "/mock/requests")

    def close(self) -> None:
        for p in (self.proxy, self.mock):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def stack():
    s = Stack()
    yield s
    s.close()


@pytest.fixture(scope="module")
def pseudo_stack():
    rules = {
        "pii.yaml": """
pack: pii
version: 1
mode: enforce
rules:
  - id: email
    description: Email addresses are pseudonymized and restored in the answer
    detector: email
    action: redact
    redact: pseudonymize
  - id: phone
    description: Phone numbers are pseudonymized
    detector: phone
    action: redact
    redact: pseudonymize
""",
    }
    s = Stack(rules=rules, chunk_chars=1)
    yield s
    s.close()
