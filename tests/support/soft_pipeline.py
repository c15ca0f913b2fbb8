"""Test helpers first written for tests/e2e/test_soft_labels_e2e.py, shared by other tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from scenefit.core.criteria import CRITERIA

DESIGNATED, CO_JUDGES = "qwen72b-sim", ("molmo72b-sim", "internvl38b-sim")


def run_to_datasets(tmp_path: Path, db: Path, manifest: Path) -> dict[str, pd.DataFrame]:
    from scenefit.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["consensus", "--db", str(db), "--manifest", str(manifest), "--out", str(tmp_path / "c"),
                            "--designated", DESIGNATED])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["split", str(tmp_path / "c" / "consensus.parquet"), "--out", str(tmp_path / "s"),
                            "--counts", "12,4,4", "--seed", "1", "--allow-fewer"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["datasets", str(tmp_path / "s"), "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    out = {}
    for c in CRITERIA:
        soft = manifest["criteria"][c.value]["soft_labels"]["train"]
        assert 0 < soft["teacher_p_out"] <= manifest["criteria"][c.value]["splits"]["train"]["rows"]
        out[c.value] = pd.concat([pd.read_parquet(tmp_path / "d" / c.value / f"{s}.parquet") for s in ("train", "val", "test")])
    return out

