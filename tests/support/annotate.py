"""Test helpers first written for tests/e2e/test_annotate_kill.py, shared by other tests."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import yaml

PERSONAS = ("qwen72b-sim", "molmo72b-sim", "internvl38b-sim")


def default_sigint() -> None:
    """In a child before exec: SIGINT back to its default action (an ignored one survives exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def simulated_run(tmp_path: Path, n: int, seed: int, concurrency: int, commit_every: int,
                  commit_interval_s: float) -> tuple[list[str], Path]:
    """A world of ``n`` samples and the `scenefit annotate` command line (with --json) that asks
    the three simulated teachers about it; returns (command, store path)."""
    from scenefit.testbed.world import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(WorldConfig(n=n, seed=seed, originals=False), world)
    config = tmp_path / "annotate.yaml"
    # An artificial delay per answer makes the run long enough to be killed in the middle.
    teachers = [{"name": p, "backend": "simulated", "persona": p, "concurrency": concurrency, "delay_s": 0.05}
                for p in PERSONAS]
    config.write_text(yaml.safe_dump({"annotate": {
        "teachers": teachers, "commit_every": commit_every, "commit_interval_s": commit_interval_s}}))
    db = tmp_path / "ann.sqlite"
    cmd = [str(Path(sys.executable).with_name("scenefit")), "annotate", str(world / "manifest.parquet"), "--db", str(db),
           "--config", str(config), "--no-progress", "--json"]
    return cmd, db

