"""Benchmark: consensus + split + three student datasets on 100,000 samples × 3 teachers.

    .venv/bin/python benchmarks/data_stages.py                 # n=100000, 3 repeats
    .venv/bin/python benchmarks/data_stages.py --n 20000 --repeats 5
    .venv/bin/python benchmarks/data_stages.py --smoke             # 2,000 samples, once

A synthetic answer table (three simulated teachers with 5 / 10 / 20 % label noise and a few
unreadable answers) goes through the project path — ``build_consensus`` (the applied rule plus
the full report: all four rules, agreement, Cohen's and Fleiss' kappa, accuracy vs truth),
``balanced_split`` (20,000 / 2,000 / 2,000, group-aware) and ``build_student_datasets`` with
the Parquet files written — timed as the median of the repeats, with peak RSS.

Baseline, in the same run: the consensus rules computed the obvious way, a Python loop over
the answer rows into per-sample dicts, then one pass per sample per rule (what a first
version of this stage would do). It computes only the four rules' kept sets and labels, no
report, and its result is checked against the project path's. Goal here: the whole project
path in ≤ 60 s on 2 cores for 100,000 samples (the split takes a fifth of n for train and a fiftieth
each for val and test: 20,000 / 2,000 / 2,000 at the default n).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scenefit.core.criteria import CRITERIA
from scenefit.data.consensus import FIELDS, RULES, ConsensusConfig, answer_matrix, apply_rule, build_consensus
from scenefit.data.datasets import DatasetsConfig, build_student_datasets, write_student_datasets
from scenefit.data.split import SplitConfig, balanced_split, write_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, smoke_flag  # noqa: E402
from _timing import timed  # noqa: E402

BENCH_ARGS: list[str] = []

LABELS = np.array(["In-context", "Out-of-context"], dtype=object)
TEACHERS = (("qwen", 0.05), ("molmo", 0.10), ("internvl", 0.20))


#: Distinct small images the samples point at in turn: the datasets stage embeds each row's image
#: (as `scenefit datasets` does), so the files must exist; their count keeps the folder small.
N_IMAGES = 64


def sample_images(folder: Path, n: int = N_IMAGES) -> list[str]:
    """``n`` distinct 112 x 112 noise PNGs in ``folder`` (absolute paths)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), "RGB").save(p)
        paths.append(str(p))
    return paths


def synthetic_tables(n: int, images: list[str], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(answers, manifest): truth per criterion with 20 % violations, noisy teachers; the samples
    point at ``images`` in turn."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:07d}" for i in range(n)], dtype=object)
    truth = (rng.random((n, 3)) < 0.2).astype(np.int64)
    manifest = pd.DataFrame({
        "id": ids, "image": [images[i % len(images)] for i in range(n)], "object": rng.choice(["cow", "zebra", "car", "kite"], n),
        "box": [[2, 2, 40, 40]] * n, "group": [f"g{i // 4}" for i in range(n)], "scene": "farm",
        "boxed": False, "synthetic": True,
        **{f"truth_{c.value}": LABELS[truth[:, k]] for k, c in enumerate(CRITERIA)},
    })
    frames = []
    for name, err in TEACHERS:
        labels = truth ^ (rng.random((n, 3)) < err)
        status = np.where(rng.random(n) < 0.02, "unparseable", "ok").astype(object)
        ok = status == "ok"
        frame = pd.DataFrame({"sample_id": ids, "teacher": name, "prompt_hash": "bench", "status": status,
                              "final": np.where(ok, LABELS[labels.max(axis=1)], None)})
        for k, c in enumerate(CRITERIA):
            frame[f"label_{c.value}"] = np.where(ok, LABELS[labels[:, k]], None)
            frame[f"analysis_{c.value}"] = np.where(ok, f"{name} judges the {c.value} plausible.", None)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), manifest


def naive_rules(answers: pd.DataFrame, teachers: list[str], designated: str) -> dict[str, dict[str, tuple]]:
    """Baseline: per-row loop into dicts, then per-sample rule checks. {rule: {id: (final, loc, size, co)}}."""
    by_sample: dict[str, dict[str, dict]] = {}
    for row in answers.to_dict("records"):
        by_sample.setdefault(row["sample_id"], {})[row["teacher"]] = row
    usable = {"ok", "partial", "contradiction"}
    answered = usable | {"unparseable", "empty"}
    out: dict[str, dict[str, tuple]] = {r: {} for r in RULES}
    for sid, per_teacher in by_sample.items():
        votes = {}
        for f in FIELDS:
            col = "final" if f == "final" else f"label_{f}"
            votes[f] = [
                per_teacher[t][col] if t in per_teacher and per_teacher[t]["status"] in usable else None
                for t in teachers
            ]

        def unanimous(v):
            return v[0] if all(x is not None for x in v) and len(set(v)) == 1 else None

        def majority(v):
            for lab in ("In-context", "Out-of-context"):
                if sum(x == lab for x in v) > len(v) // 2:
                    return lab
            return None

        una = {f: unanimous(votes[f]) for f in FIELDS}
        maj = {f: majority(votes[f]) for f in FIELDS}
        des = {f: votes[f][teachers.index(designated)] for f in FIELDS}
        if una["final"] is not None:
            out["unanimous_final"][sid] = tuple(una[f] for f in FIELDS)
        if all(una[f] is not None for f in FIELDS):
            out["unanimous_all"][sid] = tuple(una[f] for f in FIELDS)
        if maj["final"] is not None:
            out["majority"][sid] = tuple(maj[f] for f in FIELDS)
        all_answered = all(t in per_teacher and per_teacher[t]["status"] in answered for t in teachers)
        if des["final"] is not None and all_answered:
            out["designated"][sid] = tuple(des[f] for f in FIELDS)
        if any(des[f] is not None for f in FIELDS if f != "final") and all_answered:
            out["designated_criteria"][sid] = tuple(des[f] for f in FIELDS)
    return out


def vectorised_rules(answers: pd.DataFrame, ids, teachers: list[str], designated: str):
    """The project's rule code alone: the answer matrix, then each rule's kept mask and codes."""
    m = answer_matrix(answers, ids, teachers, designated)
    return m, {rule: apply_rule(m, rule) for rule in RULES}


def as_dicts(m, results) -> dict[str, dict[str, tuple]]:
    """Vectorised results in the baseline's shape, for the equality check (not timed)."""
    from scenefit.data.consensus import label_strings

    out = {}
    for rule, (keep, labels) in results.items():
        cols = [label_strings(labels[f][keep]) for f in FIELDS]
        out[rule] = dict(zip(m.sample_ids[keep], zip(*cols)))
    return out


def project_path(answers: pd.DataFrame, manifest: pd.DataFrame, out: Path) -> dict:
    t0 = time.perf_counter()
    cons = build_consensus(answers, manifest, ConsensusConfig(designated="qwen"))
    t1 = time.perf_counter()
    n = len(manifest)
    split = balanced_split(cons.frame, SplitConfig(counts={"train": n // 5, "val": n // 50, "test": n // 50}), cons.meta)
    write_split(split, out / "split", {})
    t2 = time.perf_counter()
    data = build_student_datasets(split.frames, DatasetsConfig(), split.manifest)
    write_student_datasets(data, out / "datasets", {}, "apache-2.0")
    t3 = time.perf_counter()
    return {"consensus": t1 - t0, "split": t2 - t1, "datasets": t3 - t2, "total": t3 - t0,
            "kept": len(cons.frame), "split_counts": split.manifest["counts"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="samples (each answered by 3 teachers)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; medians are printed")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.n, args.repeats = 2000, 1

    tmp_dir = tempfile.TemporaryDirectory()
    tmp = tmp_dir.name
    t = time.perf_counter()
    answers, manifest = synthetic_tables(args.n, sample_images(Path(tmp) / "images"))
    print(f"synthetic tables: {args.n} samples x {len(TEACHERS)} teachers = {len(answers)} answers, "
          f"{N_IMAGES} distinct images ({time.perf_counter() - t:.1f} s to make)  [SYNTHETIC benchmark data]")
    teachers = [t for t, _ in TEACHERS]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    runs = []
    with tmp_dir:
        for i in range(args.repeats):
            runs.append(project_path(answers, manifest, Path(tmp) / str(i)))
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = {k: statistics.median(r[k] for r in runs) for k in ("consensus", "split", "datasets", "total")}
    print(f"\nproject path, median of {args.repeats}: consensus {med['consensus']:.2f} s (with full report), "
          f"split {med['split']:.2f} s, three datasets {med['datasets']:.2f} s -> total {med['total']:.2f} s "
          f"(goal <= 60 s: {'met' if med['total'] <= 60 else 'MISSED'})")
    print(f"kept {runs[0]['kept']} by unanimous_final; split {runs[0]['split_counts']}")
    print(f"peak RSS {rss_peak:.0f} MiB (tables alone: {rss_before:.0f} MiB)")

    vec_t, vec = timed(lambda: vectorised_rules(answers, manifest["id"], teachers, "qwen"), args.repeats)
    naive_t, naive = timed(lambda: naive_rules(answers, teachers, "qwen"), args.repeats)
    vec = as_dicts(*vec)
    same = all(vec[r] == naive[r] for r in RULES)
    print(f"\nfive consensus rules, median of {args.repeats}: naive per-row loop {naive_t:.2f} s, "
          f"vectorised {vec_t:.2f} s -> {naive_t / vec_t:.1f}x faster; same kept sets and labels: {same}")
    if not same:
        sys.exit("the vectorised rules disagree with the baseline")
    ratio("consensus_rules.naive_vs_vectorised", naive_t / vec_t,
          what=f"five consensus rules on {args.n:,} samples x 3 teachers: a per-row Python loop {naive_t:.2f} s vs the "
               f"project's vectorised rules {vec_t:.2f} s (same kept sets and labels)")
    ratio("whole_path.share_of_60s", med["total"] / 60,
          what=f"consensus (full report) + split + three datasets on {args.n:,} samples x 3 teachers: "
               f"{med['total']:.2f} s of the 60 s goal; peak RSS {rss_peak:.0f} MiB",
          goal="<= 1 (<= 60 s at 100,000 samples)", met=med["total"] <= 60)


if __name__ == "__main__":
    main()
