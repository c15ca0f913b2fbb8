"""`scenefit train` in two processes on CPU (DDP over gloo), as docs/reference.md launches it ("Several GPUs", issue 15).

    .venv/bin/python -m pytest tests/e2e/test_train_multiprocess.py -q

A 2-process run must train like a 1-process run with the same effective batch (same epochs per
step, same losses, an adapter that decides the same), write every output from one process only,
resume after a kill, and say so when a launcher was asked for 2 processes but started one.
Which process opened which file for writing is recorded by a Python audit hook (a
``sitecustomize`` on PYTHONPATH); files written by Rust code (safetensors, tokenizers) are not
seen, so the adapter is judged by ``adapter_config.json``, which PEFT writes in the same call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from scenefit.core.config import packaged_configs_dir
from support.train_data import make_datasets, small_config

REPO = Path(__file__).resolve().parents[2]

BIN = Path(sys.executable).parent

SCENEFIT = str(BIN / "scenefit")

DDP_CONFIG = str(packaged_configs_dir() / "accelerate" / "multi_gpu_ddp.yaml")

#: Every top-level output of a student folder that a Python writer produces.
OUTPUTS = ("adapter_config.json", "README.md", "metrics.json", "log.jsonl", "config.yaml",
           "scenefit_student.json", "dataset_manifest.json", "tokenizer_config.json")

AUDIT_HOOK = '''
import os, sys
_dir = os.environ.get("SCENEFIT_WRITE_AUDIT")
if _dir:
    _root = os.environ["SCENEFIT_WRITE_AUDIT_ROOT"]
    _rank = os.environ.get("RANK", "launcher")
    _log = open(os.path.join(_dir, "writes-%d.tsv" % os.getpid()), "a", buffering=1)
    _log.write(_rank + "\\tSTARTED\\n")  # proves the hook runs in this process

    def _record(event, args):
        if event != "open" or isinstance(args[0], int):
            return
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & (os.O_WRONLY | os.O_RDWR))
        path = os.path.abspath(os.fsdecode(path))
        if writes and path.startswith(_root):
            _log.write(_rank + "\\t" + path + "\\n")

    sys.addaudithook(_record)
'''

def _config(**over) -> dict:
    # per-device 2 x accumulation 2 x 2 processes = 8; one process recomputes accumulation 4
    settings = dict(per_device_batch_size=2, gradient_accumulation_steps=2, num_devices=2, effective_batch_size=8,
                    max_steps=10, eval_steps=5, logging_steps=1, report_to=[], score_test=False)
    cfg = small_config(**{**settings, **over})
    return {"train": cfg.model_dump(mode="json")}

def _env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

def _train_args(data: Path, model: Path, out: Path, conf: Path) -> list[str]:
    return [SCENEFIT, "train", "--criterion", "location", "--data", str(data), "--model", str(model),
            "--out", str(out), "--config", str(conf)]

def torchrun(*args: str) -> list[str]:
    """docs/reference.md's CPU command."""
    return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *args]

def accelerate_ddp(*args: str) -> list[str]:
    """docs/reference.md's accelerate command with 2 processes (a free port: other runs may share the machine)."""
    return [str(BIN / "accelerate"), "launch", "--config_file", DDP_CONFIG, "--num_processes", "2",
            "--main_process_port", str(_free_port()), *args]

def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux /proc), children first."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found

def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]

def _writers(audit_dir: Path) -> dict[str, set[str]]:
    ranks: dict[str, set[str]] = defaultdict(set)
    for f in audit_dir.glob("writes-*.tsv"):
        for line in f.read_text().splitlines():
            rank, path = line.split("\t", 1)
            ranks[path.removesuffix(".tmp")].add(rank)  # written beside, then renamed over the output
    return ranks

@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("multiprocess")
    data = make_datasets(root, sizes=(("train", 48), ("val", 16), ("test", 4)))
    conf = root / "train.yaml"
    conf.write_text(yaml.safe_dump(_config()))
    return root, data, conf, tiny_model_dir

@pytest.mark.slow
def test_two_processes_train_like_one_and_write_each_output_once(setup, tmp_path):
    from scenefit.core.config import resolve
    from scenefit.models.loading import load_model, load_processor
    from scenefit.student.decision import score_rows
    from scenefit.train.data import read_split
    from scenefit.train.trainer import train_student

    root, data, conf, model = setup
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT_HOOK)
    out2 = tmp_path / "two"
    pythonpath = os.pathsep.join(p for p in (str(audit), os.environ.get("PYTHONPATH", "")) if p)
    env = _env(PYTHONPATH=pythonpath, SCENEFIT_WRITE_AUDIT=str(audit), SCENEFIT_WRITE_AUDIT_ROOT=str(out2))
    res = subprocess.run(torchrun(*_train_args(data, model, out2, conf)), env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["location"]["global_step"] == 10  # one summary, not one per process
    assert "world size 1" not in res.stderr

    one = train_student("location", data, str(model), tmp_path / "one", resolve("train", conf))
    two = json.loads((out2 / "location" / "metrics.json").read_text())
    assert (two["world_size"], two["gradient_accumulation_steps"]) == (2, 2)
    assert (one.metrics["world_size"], one.metrics["gradient_accumulation_steps"]) == (1, 4)
    assert two["effective_batch_size"] == one.metrics["effective_batch_size"] == 8
    # Epoch accounting: 8 samples per step over 48 rows, in both runs.
    assert two["epoch"] == pytest.approx(10 * 8 / 48) and one.metrics["epoch"] == pytest.approx(two["epoch"])
    losses2 = [(r["step"], r["epoch"], r["loss"]) for r in _log(out2 / "location") if "loss" in r]
    losses1 = [(r["step"], r["epoch"], r["loss"]) for r in _log(one.out_dir) if "loss" in r]
    assert [s for s, _, _ in losses2] == list(range(1, 11))  # each step logged once
    assert [s for s, _, _ in losses1] == list(range(1, 11))
    assert [e for _, e, _ in losses2] == pytest.approx([e for _, e, _ in losses1])
    assert [x for _, _, x in losses2] == pytest.approx([x for _, _, x in losses1], rel=1e-3)

    # The two adapters decide the validation rows alike (within noise: here within a row).
    from peft import PeftModel

    rows = read_split(data, "location", "val").to_dict("records")
    processor = load_processor(one.out_dir)
    preds = {}
    for name, folder in (("one", one.out_dir), ("two", out2 / "location")):
        student = PeftModel.from_pretrained(load_model(model, "fp32", "cpu"), str(folder))
        preds[name] = score_rows(student, processor, rows)
    agree = sum(a["label"] == b["label"] for a, b in zip(preds["one"], preds["two"]))
    assert agree >= len(rows) - 1
    assert [p["p_out"] for p in preds["two"]] == pytest.approx([p["p_out"] for p in preds["one"]], abs=0.02)

    writers = _writers(audit)
    student = out2 / "location"
    for name in OUTPUTS:
        assert writers.get(str(student / name)) == {"0"}, (name, writers.get(str(student / name)))
    for path, ranks in writers.items():
        if path != "STARTED":
            assert len(ranks) == 1, (path, ranks)
    assert writers["STARTED"] == {"launcher", "0", "1"}  # the hook watched both ranks

@pytest.mark.slow
def test_the_documented_accelerate_command_resumes_after_a_kill(setup, tmp_path):
    root, data, _, model = setup
    conf = tmp_path / "long.yaml"
    conf.write_text(yaml.safe_dump(_config(max_steps=12, eval_steps=3)))
    out = tmp_path / "students"
    cmd = accelerate_ddp(*_train_args(data, model, out, conf))
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = out / "location" / "trainer"
    deadline = time.time() + 600  # a hang guard; the loop leaves at the first complete checkpoint
    try:
        while time.time() < deadline and proc.poll() is None:
            if any((p / "trainer_state.json").is_file() for p in run.glob("checkpoint-*")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "training ended before it could be killed; make it longer"
        assert any((p / "trainer_state.json").is_file() for p in run.glob("checkpoint-*")), \
            "no complete checkpoint before the deadline: the kill would test a fresh start, not a resume"
    finally:
        # The launcher and both ranks, as a kill of the whole job would (torch's launcher starts
        # each rank in a session of its own, so killing its process group alone leaves them).
        for pid in [proc.pid, *_descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "location" / "metrics.json").exists()

    res = subprocess.run(accelerate_ddp(*_train_args(data, model, out, conf)), env=_env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((out / "location" / "metrics.json").read_text())
    assert metrics["global_step"] == 12 and metrics["world_size"] == 2
    assert metrics["resumed_from"] and metrics["epoch"] == pytest.approx(12 * 8 / 48)
    assert [r["step"] for r in _log(out / "location") if "loss" in r] == list(range(1, 13))

@pytest.mark.slow
def test_accelerate_cpu_flag_warns_that_it_runs_one_process(setup, tmp_path):
    root, data, _, model = setup
    conf = tmp_path / "short.yaml"
    conf.write_text(yaml.safe_dump(_config(max_steps=1, eval_steps=1)))
    cmd = [str(BIN / "accelerate"), "launch", "--cpu", "--num_processes", "2", "--main_process_port", str(_free_port()),
           *_train_args(data, model, tmp_path / "s", conf)]
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    flat = " ".join(res.stderr.split())  # rich wraps lines
    assert "asked for 2 processes but this run has world size 1" in flat and "torchrun" in flat
    assert json.loads((tmp_path / "s" / "location" / "metrics.json").read_text())["world_size"] == 1

