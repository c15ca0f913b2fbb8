"""Which checkpoint a rerun of ``scenefit train`` resumes from, and what a resumed run reports.

    from scenefit.train.checkpoints import scan_checkpoints
    scan = scan_checkpoints(Path("runs/demo/students/location/trainer"))

The Trainer writes a checkpoint in steps (folder, adapter weights, optimizer and scheduler, RNG
state, then ``trainer_state.json`` last), so a kill can leave a folder that has some of these and
not the rest; ``transformers.trainer_utils.get_last_checkpoint`` picks such a folder by its number
alone and every rerun then fails. Here a checkpoint counts only when its ``trainer_state.json``
parses and its weights are there; newer incomplete ones are named (and removed by the caller) and
the run resumes from the newest complete one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

STATE_FILE = "trainer_state.json"
#: Weight files a checkpoint may hold (PEFT adapter; a full model when nothing is adapted).
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def is_trained(out_dir: Path) -> bool:
    """A finished student: its adapter and metrics.json (written last) are in ``out_dir``; a
    rerun of ``scenefit train`` skips it."""
    return (out_dir / "adapter_config.json").is_file() and (out_dir / "metrics.json").is_file()


@dataclass
class CheckpointScan:
    """The checkpoint to resume from (None: start fresh) and the incomplete ones passed over."""

    resume_from: Optional[Path] = None
    state: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def resumed_step(self) -> int:
        return int(self.state.get("global_step", 0))


def read_checkpoint(path: Path) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """(its parsed ``trainer_state.json``, None) when ``path`` is a complete checkpoint, else
    (None, why it cannot be resumed from). The state file is read once, here."""
    state_file = path / STATE_FILE
    if not state_file.is_file():
        return None, f"no {STATE_FILE} (the run was stopped while this checkpoint was written)"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as e:
        return None, f"{STATE_FILE} unreadable ({e})"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return None, f"{STATE_FILE} has no global_step"
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        return None, "no weights file"
    return state, None


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None when it is complete."""
    return read_checkpoint(path)[1]


def scan_checkpoints(run_dir: Path) -> CheckpointScan:
    """Newest complete ``checkpoint-N`` under ``run_dir``; the incomplete ones newer than it
    (and any older incomplete ones, which no resume would use either) are listed as skipped."""
    scan = CheckpointScan()
    if not run_dir.is_dir():
        return scan
    numbered = []
    for p in run_dir.iterdir():
        m = _CHECKPOINT_NAME.match(p.name)
        if m and p.is_dir():
            numbered.append((int(m.group(1)), p))
    for _, path in sorted(numbered, reverse=True):
        state, problem = read_checkpoint(path)
        if problem:
            scan.skipped.append((path, problem))
        elif scan.resume_from is None:
            scan.resume_from, scan.state = path, state
    return scan


def training_finished(state: dict[str, Any], planned_max_steps: int) -> bool:
    """True when a checkpoint's state is the end of its run: the planned steps are done, or the
    Trainer had been told to stop early (early stopping) before its own step limit. Resuming such a
    checkpoint with ``Trainer.train`` would run one step past the end."""
    step = int(state.get("global_step", 0))
    limit = planned_max_steps if planned_max_steps > 0 else int(state.get("max_steps") or 0)
    if limit and step >= limit:
        return True
    control = (state.get("stateful_callbacks") or {}).get("TrainerControl") or {}
    stopped = bool((control.get("args") or {}).get("should_training_stop"))
    return stopped and step < int(state.get("max_steps") or 0)


def logged_loss_sum(log_history: list[dict], up_to_step: int) -> tuple[float, int]:
    """(sum of per-step training losses, steps covered) from the Trainer's log lines up to a step.

    Each ``loss`` line is the mean over the steps since the previous one, so it weighs by that
    window. Steps after the last logged line are not covered (their loss was never written)."""
    total, previous = 0.0, 0
    for rec in log_history:
        step = int(rec.get("step", 0))
        if "loss" in rec and previous < step <= up_to_step:
            total += float(rec["loss"]) * (step - previous)
            previous = step
    return total, previous


def whole_run_train_loss(log_history: list[dict], resumed_step: int, segment_loss: Optional[float], segment_steps: int) -> Optional[float]:
    """Mean training loss over the whole run when it was resumed at ``resumed_step``.

    The Trainer's ``train_loss`` averages only the steps of its own call (``segment_loss`` over
    ``segment_steps``); the steps before the checkpoint come from the log history it restored."""
    total, covered = logged_loss_sum(log_history, resumed_step)
    if segment_loss is not None and segment_steps > 0:
        total += segment_loss * segment_steps
        covered += segment_steps
    return total / covered if covered else None


def trim_jsonl_log(path: Path, up_to_step: int) -> int:
    """Keep the JSONL log lines at or before ``up_to_step`` (a resumed run logs the later steps
    again); returns how many lines were dropped."""
    from scenefit.core.files import atomic_write_text

    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            step = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError):
            step = up_to_step + 1  # a line cut by the kill
        if step <= up_to_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic_write_text("".join(f"{line}\n" for line in kept), path)
    return dropped
