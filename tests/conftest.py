"""Shared fixtures: offline mode, and one tiny Qwen2.5-VL built once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

# The tiny-model cache (scenefit.testbed.tiny_cache): a fresh one per test session, removed at the
# end, so tests never read or fill the user's; set SCENEFIT_CACHE_DIR to share one on purpose.
if not os.environ.get("SCENEFIT_CACHE_DIR"):
    os.environ["SCENEFIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="scenefit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SCENEFIT_CACHE_DIR"], True)

import ipaddress  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

_connect = socket.socket.connect


def _loopback_only(sock: socket.socket, address):
    """No test reaches beyond this machine (no hub, no dataset host, no stray address): a
    connection to anything but loopback fails at once, naming the address."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0]).split("%")[0]
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise OSError(f"test network guard: {host} is not loopback; tests stay on this machine")
    return _connect(sock, address)


socket.socket.connect = _loopback_only


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL folder (default TinyModelConfig), built once per session through
    the tiny-model cache, as `scenefit tiny-model` builds it."""
    from scenefit.testbed.tiny_cache import cached_tiny_model
    from scenefit.testbed.tiny_model import TinyModelConfig

    return cached_tiny_model(tmp_path_factory.mktemp("tiny_model"), TinyModelConfig(seed=0))[0]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    """A wide terminal for every CLI a test runs (in-process or as a subprocess): rich wraps text
    to the terminal width (80 when there is none), so a long temporary path inside an error line
    or typer's error box would be split across lines and a substring check would miss it. Set per
    test, so pytest's own report keeps the real width."""
    monkeypatch.setenv("COLUMNS", "1000")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module: on 2 shared cores torch's default 2 threads spin against
    other processes (measured ~6x slower). Modules opt in with pytestmark usefixtures."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def random_head_students(tiny_model_dir, tmp_path_factory) -> Path:
    """Three untrained toy students (random LoRA rank 8 + an lm_head copy each), built once
    per session and shared read-only by the predict, CLI and export tests."""
    from scenefit.testbed.toy_students import build_toy_students

    return build_toy_students(tiny_model_dir, tmp_path_factory.mktemp("random_head_students"), steps=0, rank=8)


@pytest.fixture(scope="session")
def standin_model_dir(tmp_path_factory) -> Path:
    """A shrunk Qwen2.5-VL-3B-Instruct stand-in (real vocabulary, ids, stock template and processor;
    2 layers, hidden 64, random weights), built once per session."""
    from scenefit.testbed.standin import StandinSize, build_standin_model

    size = StandinSize(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vision_depth=2, vision_hidden=32,
                       vision_intermediate=64, vision_heads=2)
    return build_standin_model(tmp_path_factory.mktemp("standin_model"), size)
