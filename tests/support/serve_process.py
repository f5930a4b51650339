"""``gemsearch serve`` as a real process on a free loopback port, for tests of what machines call."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

import requests

from support.live_server import free_port


@contextmanager
def serve_process(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 90
) -> Iterator[str]:
    """Run ``gemsearch serve ARGS --port P`` and yield its base URL once it answers HTTP."""
    port = free_port()
    cmd = [sys.executable, "-m", "gemsearch.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:  # a pipe nobody reads would block the server once full
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            _wait(base, proc, log, timeout)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _wait(base: str, proc: subprocess.Popen[bytes], log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{base}/api/settings", timeout=2)
            return
        except requests.ConnectionError:
            if proc.poll() is not None:
                log.seek(0)
                output = log.read().decode(errors="replace")
                raise RuntimeError(f"gemsearch serve exited ({proc.returncode}):\n{output}") from None
            if time.monotonic() > deadline:
                raise RuntimeError("gemsearch serve did not start") from None
            time.sleep(0.2)
