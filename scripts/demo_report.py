"""One line per demo stage: what the stage produced, read back from the files it wrote.

    .venv/bin/python scripts/demo_report.py annotate runs/demo     # called by scripts/demo.sh

Each stage's full output is in DIR/logs/; this line is what a person reads while the demo runs.
A stage whose files are missing gets an empty line (the stage's own error is in its log).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path
from typing import Callable


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def model(d: Path) -> str:
    info = _json(d / "model" / "scenefit_tiny.json")
    vp, kp = info.get("vision_pretraining") or {}, info.get("knowledge_pretraining") or {}
    line = f"{info['num_layers']}-layer language model (hidden {info['hidden_size']})"
    if vp:
        line += (f"; vision tower: box patches {_pct(vp['box_patch_accuracy_after'])} held-out "
                 f"(majority {_pct(vp['box_patch_majority'])})")
        if "ground_line_accuracy_after" in vp:
            line += f", box bottom vs ground line {_pct(vp['ground_line_accuracy_after'])}"
    if kp:
        line += (f"; catalog knowledge: scene named {_pct(kp['scene_accuracy_after'])}, 'at home here' "
                 f"{_pct(kp['at_home_accuracy_after'])} on held-out pictures")
    return line


def world(d: Path) -> str:
    c = _json(d / "world" / "world.json")["counts"]
    return f"{c['samples']:,} samples on {c['groups']:,} scenes, {c['originals']:,} originals for the shortcut test"


def ingest(d: Path) -> str:
    import pyarrow.parquet as pq

    kept = pq.read_metadata(d / "ingest" / "manifest.parquet").num_rows
    errors = d / "ingest" / "errors.jsonl"
    bad = sum(1 for line in errors.read_text().splitlines() if line.strip()) if errors.is_file() else 0
    return f"{kept:,} samples kept, {bad:,} rejected (errors.jsonl)"


def annotate(d: Path) -> str:
    con = sqlite3.connect(f"file:{d / 'annotate' / 'annotations.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT teacher, COUNT(*), SUM(status = 'failed') FROM annotations GROUP BY teacher").fetchall()
    finally:
        con.close()
    total, failed = sum(r[1] for r in rows), sum(r[2] or 0 for r in rows)
    return f"{total:,} answers from {len(rows)} teachers stored, {failed:,} failed requests"


def consensus(d: Path) -> str:
    r = _json(d / "consensus" / "report.json")
    after = r["accuracy"]["after"].get(r["rule"], {}).get("final", {})
    before = r["accuracy"]["before"].get("final", {})
    return (f"{r['samples']['kept']:,} of {r['samples']['manifest']:,} kept ({r['rule']}); final label vs truth "
            f"{_pct(before.get('accuracy'))} for the designated teacher alone -> {_pct(after.get('accuracy'))} on the kept")


def split(d: Path) -> str:
    c = _json(d / "split" / "manifest.json")["counts"]
    return "train / val / test = " + " / ".join(f"{c.get(s, 0):,}" for s in ("train", "val", "test")) + " (1:1 final)"


def datasets(d: Path) -> str:
    m = _json(d / "datasets" / "manifest.json")
    parts = [f"{c} {'/'.join(str(i['splits'][s]['rows']) for s in ('train', 'val', 'test') if s in i['splits'])}"
             for c, i in m["criteria"].items()]
    balanced = ", ".join(m.get("rebalance") or []) or "none"
    return "rows train/val/test: " + "; ".join(parts) + f" (balanced 1:1: {balanced})"


def train(d: Path) -> str:
    s = _json(d / "students.json")
    parts = []
    for c, r in s.items():
        t = r.get("test") or {}
        acc = (t.get("student") or {}).get("accuracy_vs_truth")
        base = (t.get("base") or {}).get("accuracy_vs_truth")
        parts.append(f"{c} {_pct(acc)} (base {_pct(base)})")
    return "test decisions vs truth: " + "; ".join(parts)


def evaluate(d: Path) -> str:
    m = _json(d / "report" / "metrics.json")
    parts = []
    for c in m.get("criteria", []) + ["fused"]:
        r = m.get(c) or {}
        if "accuracy_vs_truth" in r:
            parts.append(f"{c} {_pct(r['accuracy_vs_truth'])} (n {r.get('n')})")
    return "vs truth: " + "; ".join(parts) + " — report.html"


STAGES: dict[str, Callable[[Path], str]] = {
    "model": model, "world": world, "ingest": ingest, "annotate": annotate, "consensus": consensus,
    "split": split, "datasets": datasets, "train": train, "evaluate": evaluate,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in STAGES:
        print(f"usage: demo_report.py {{{','.join(STAGES)}}} DIR", file=sys.stderr)
        return 2
    try:
        print(STAGES[argv[0]](Path(argv[1])))
    except (OSError, KeyError, TypeError, ValueError, sqlite3.Error) as e:  # a summary never fails the demo
        print(f"(no summary: {type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
