"""Test helpers first written for tests/e2e/test_openai_server.py, shared by other tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx


@contextlib.contextmanager
def openai_server(model_dir: Path, name: str, *flags: str, exe: Path | None = None, env: dict | None = None,
                  cwd: Path | None = None):
    """`scenefit serve-teacher` on ``model_dir`` as a subprocess (``exe``: another install's
    `scenefit`); yields its base URL (read from its first stdout line) and stops it with Ctrl-C."""
    exe = exe or Path(sys.executable).with_name("scenefit")
    proc = subprocess.Popen(
        [str(exe), "serve-teacher", "--model", str(model_dir), "--model-name", name, "--port", "0", "--device", "cpu",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
        cwd=cwd,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=180)
    if not line or not line[0].startswith("serving http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line} {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}")
    base = line[0].split()[1].rstrip("/")
    try:
        # the line is printed only once the socket listens: a request made at once is answered
        assert httpx.get(base + "/models", timeout=60).status_code == 200
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

