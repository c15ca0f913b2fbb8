"""Students trained side by side: one `scenefit train --criterion C` process per student, at most
``train.jobs`` at once (`scenefit train --criterion all --jobs 2`).

A tiny model's training step is bound by Python and small matrices, not by the number of torch
threads (one or two threads train a demo student in the same time on 2 cores), so two students
in two single-threaded processes finish in about the time of one. Each process trains its student
exactly as `scenefit train` alone would (same seed, data order, checkpoints, resume), so the
students do not depend on ``jobs``. With GPUs each process sees one device (round robin).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Callable, Optional, Sequence, TextIO

#: Environment variables of the math libraries' thread pools, set per student process.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def job_env(index: int, jobs: int, base: Optional[dict[str, str]] = None,
            cpus: Optional[int] = None, gpus: Optional[Sequence[str]] = None) -> dict[str, str]:
    """The environment of the ``index``-th student process: its share of the CPU cores as torch
    threads (at least one), its GPU when there are any (``gpus``: the visible device ids)."""
    env = dict(os.environ if base is None else base)
    share = max(1, (cpus or os.cpu_count() or 1) // max(1, jobs))
    for var in THREAD_VARS:
        env[var] = str(share)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ids for CUDA_VISIBLE_DEVICES (none on a CPU)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch CUDA: a CPU machine
        return []


def _relay(stream, name: str, sink: TextIO) -> None:
    """A student's output, line by line, each line marked with its criterion."""
    for line in stream:
        sink.write(f"[{name}] {line}" if line.strip() else line)
        sink.flush()


def train_in_processes(criteria: Sequence[str], argv_for: Callable[[str], list[str]], jobs: int,
                       sink: TextIO = sys.stderr, preexec: Optional[Callable[[], None]] = None) -> dict[str, int]:
    """Run ``argv_for(criterion)`` for every criterion, at most ``jobs`` processes at once; their
    output goes to ``sink`` marked with the criterion. Returns each criterion's exit status. An
    interrupt or a kill of this process stops every running student (``preexec``: e.g. the
    parent-death signal), each resumable by the same command."""
    gpus = visible_gpus()
    pending = list(enumerate(criteria))
    running: dict[str, tuple[subprocess.Popen, threading.Thread]] = {}
    codes: dict[str, int] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                index, name = pending.pop(0)
                proc = subprocess.Popen(argv_for(name), env=job_env(index, jobs, gpus=gpus), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, preexec_fn=preexec)
                relay = threading.Thread(target=_relay, args=(proc.stdout, name, sink), daemon=True)
                relay.start()
                running[name] = (proc, relay)
            finished = _wait_any(running)
            proc, relay = running.pop(finished)
            relay.join()
            codes[finished] = proc.returncode
    finally:
        for proc, _ in running.values():  # interrupted: the students still running stop too
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in running.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    return codes


def _wait_any(running: dict[str, tuple[subprocess.Popen, threading.Thread]]) -> str:
    """The criterion of the first running process to end (polled: a few processes, minutes each)."""
    import time

    while True:
        for name, (proc, _) in running.items():
            if proc.poll() is not None:
                return name
        time.sleep(0.2)
