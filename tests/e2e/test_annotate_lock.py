"""Two `scenefit annotate` runs on one store never ask a teacher twice: the second refuses
while the first holds the store's lock, or waits for it and then asks only what is missing;
each summary counts the rows the store really wrote (issue 21.7).

    .venv/bin/python -m pytest tests/e2e/test_annotate_lock.py -q
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest

from scenefit.core.records import Sample
from scenefit.prompts import teacher_prompt
from scenefit.teachers.annotate import annotate_async
from scenefit.teachers.base import Teacher, TeacherResult
from scenefit.teachers.config import AnnotateConfig, TeacherConfig
from scenefit.teachers.store import AnnotationStore
from scenefit.teachers.store import stored_answers as stored
from support.annotate import PERSONAS, default_sigint, simulated_run

N = 12


@pytest.fixture()
def run_setup(tmp_path) -> dict:
    cmd, db = simulated_run(tmp_path, N, seed=3, concurrency=1, commit_every=1, commit_interval_s=0.1)
    return {"cmd": cmd, "db": db, "env": dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")}


def test_a_second_run_refuses_or_waits_and_no_teacher_is_asked_twice(run_setup):
    cmd, db, env = run_setup["cmd"], run_setup["db"], run_setup["env"]
    total = N * len(PERSONAS)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = None
    try:
        deadline = time.monotonic() + 120
        while stored(db) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before it could be paused"
        # Paused, the first run still holds the lock (and has answers left to ask): no timing race.
        first.send_signal(signal.SIGSTOP)
        refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2
        message = " ".join(refused.stderr.split())
        assert "another run is writing this store" in message and f"pid {first.pid}" in message
        assert "--lock-wait" in message
        before = stored(db)
        assert 1 <= before < total
        waiting = subprocess.Popen(cmd + ["--lock-wait", "300"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300  # the waiting run says it waits, and has stored nothing
        while waiting.poll() is None and time.monotonic() < deadline and not _said_waiting(waiting):
            time.sleep(0.05)
        assert _said_waiting(waiting) and stored(db) == before
        first.send_signal(signal.SIGCONT)
        out1, err1 = first.communicate(timeout=300)
        out2, err2 = waiting.communicate(timeout=300)
        err2 = err2.decode(errors="replace")
    finally:
        for proc in (first, waiting):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=30)
    assert first.returncode == 0, err1[-2000:]
    assert waiting.returncode == 0, err2[-2000:]
    one, two = json.loads(out1), json.loads(out2)
    # every (sample, teacher) was asked by exactly one run, and the summaries say who
    assert sum(t["stored"] for t in one["teachers"].values()) == total
    assert sum(t["stored"] for t in two["teachers"].values()) == 0
    assert sum(t["skipped"] for t in two["teachers"].values()) == total
    assert stored(db) == total


_STDERR_SEEN: dict[int, bytes] = {}  # pid -> what the process wrote to stderr so far


def _said_waiting(proc: subprocess.Popen) -> bool:
    """True once the waiting run has printed its 'waiting up to' line (raw reads that never
    block, so no text stays buffered where select cannot see it)."""
    seen = _STDERR_SEEN
    fd = proc.stderr.fileno()
    os.set_blocking(fd, False)
    try:
        seen[proc.pid] = seen.get(proc.pid, b"") + (os.read(fd, 65536) or b"")
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, True)
    return b"waiting up to 300 s" in seen.get(proc.pid, b"")


def test_the_summary_counts_only_rows_the_store_wrote(tmp_path):
    """A writer outside the lock (say, an older scenefit) stores one key first: this run's
    answer for it is not written, and the summary does not claim it."""
    db = tmp_path / "a.sqlite"
    prompt_hash = teacher_prompt().hash
    samples = [Sample(id=f"s{i}", image="x.png", object="dog", box=(0, 0, 4, 4)) for i in range(4)]

    class RacedTeacher(Teacher):
        async def answer_one(self, request):
            if request.sample.id == "s2":
                with AnnotationStore(db) as other:
                    other.put_many([{"sample_id": "s2", "teacher": self.name, "prompt_hash": prompt_hash,
                                     "raw": "Final decision: Out-of-context", "status": "partial"}])
            return TeacherResult(raw="Final decision: In-context")

    cfg = AnnotateConfig(teachers=[], progress=False, commit_every=100)
    teacher = RacedTeacher(TeacherConfig(name="raced", backend="simulated", concurrency=1))
    with AnnotationStore(db) as store:
        summary = asyncio.run(annotate_async(samples, cfg, store, teachers=[teacher]))
        assert store.count() == 4
    tally = summary.teachers["raced"]
    assert tally.stored == 3 and tally.skipped == 1 and sum(tally.by_status.values()) == 3


def test_ctrl_c_while_waiting_for_the_lock_ends_130_at_once(run_setup):
    """A run waiting (--lock-wait 300) for another's lock stops on Ctrl-C with 130 and how to
    continue, without sitting out its wait (the wait used to sleep in a thread that held the exit)."""
    cmd, db, env = run_setup["cmd"], run_setup["db"], run_setup["env"]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waiting = None
    try:
        deadline = time.monotonic() + 120
        while stored(db) < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before it could be paused"
        first.send_signal(signal.SIGSTOP)  # holds the lock for as long as the test likes
        waiting = subprocess.Popen(cmd + ["--lock-wait", "300"], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, preexec_fn=default_sigint)
        deadline = time.monotonic() + 300  # a loaded machine can take minutes to start the CLI
        while waiting.poll() is None and time.monotonic() < deadline and not _said_waiting(waiting):
            time.sleep(0.05)
        assert _said_waiting(waiting), (waiting.poll(), _STDERR_SEEN.get(waiting.pid, b"")[-2000:])
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=120)  # a hang guard, far below the 300 s wait
        said = " ".join((_STDERR_SEEN.get(waiting.pid, b"") + err).decode(errors="replace").split())
        assert waiting.returncode == 130 and "run the same command again" in said
    finally:
        for proc in (first, waiting):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait(timeout=30)
