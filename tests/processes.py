"""Starting and stopping real processes for fault tests: gunicorn, Celery workers, Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def logs_text(folder: Path) -> str:
    """The logs the processes of a test wrote into its *folder*, their ends, for failure messages."""
    return "\n".join(p.read_text(errors="replace")[-6000:] for p in folder.glob("*.log"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Processes:
    """Every process a test started, stopped at the end whatever happens."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        out.close()
        self.procs.append(proc)
        return proc

    def gunicorn(
        self, log: Path, workers: int = 2, timeout: int = 60, graceful: int = 1, app: str = "tests.service_app:app"
    ) -> str:
        port = free_port()
        self.start(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-w",
                str(workers),
                "-b",
                f"127.0.0.1:{port}",
                "--timeout",
                str(timeout),
                "--graceful-timeout",
                str(graceful),
                app,
            ],
            log,
        )
        wait_for(lambda: port_open(port), 30, f"gunicorn on port {port} ({log})")
        return f"http://127.0.0.1:{port}/webhooks/moltin"

    def celery_worker(self, log: Path, queue: str, app: str = "tests.service_app:celery") -> subprocess.Popen[bytes]:
        proc = self.start(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "-Q",
                queue,
                "--pool",
                "threads",
                "-c",
                "4",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            log,
        )
        wait_for(lambda: b"ready" in log.read_bytes(), 60, f"the Celery worker ({log})")
        return proc

    def redis_server(self, port: int, log: Path) -> subprocess.Popen[bytes]:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        proc = self.start([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], log)
        wait_for(lambda: port_open(port), 15, f"redis-server on port {port}")
        return proc

    def run(self, code: str) -> None:
        """Run Python *code* in a child with the processes' environment; fail with its output if it fails."""
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def in_child(work: Callable[[], bool], *, hung_after: float) -> int:
    """Fork; run *work* in the child (exit 0 when it returns True); the child's exit code.

    A child still running after *hung_after* seconds is killed, and -9 returned.
    """
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if work() else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + hung_after
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9
