"""Hard labels vs soft labels vs both, on the synthetic world (issue #18 item 5).

    .venv/bin/python benchmarks/soft_labels.py --run runs/soft --criteria location size --seeds 0 1 2 --steps 600
    .venv/bin/python benchmarks/soft_labels.py --smoke     # a small run built here, 2 steps: seconds

RUN must hold a tiny base (``RUN/model``) and student datasets whose rows carry the teachers'
probabilities (``RUN/datasets``: columns ``teacher_p_out`` and ``teachers_mean_p_out``): the demo's
first seven stages (``make demo DEMO_DIR=runs/soft`` builds them and more), or by hand (~7 min on
2 loaded cores, most of it the tiny model)::

    D=runs/soft SF=.venv/bin/scenefit C=demo
    $SF tiny-model $D/model --config $C && $SF synth --config $C --out $D/world
    $SF ingest $D/world/manifest.parquet --out $D/ingest --config $C
    $SF annotate $D/ingest/manifest.parquet --db $D/annotate/annotations.sqlite --config $C
    $SF consensus --db $D/annotate/annotations.sqlite --manifest $D/ingest/manifest.parquet --out $D/consensus --config $C
    $SF split $D/consensus/consensus.parquet --out $D/split --config $C && $SF datasets $D/split --out $D/datasets --config $C

For every criterion and seed it trains three students on the same rows, for the same steps, from
the same seed (the demo's train settings from ``--config``, early stopping off, best checkpoint by the
validation decision's balanced accuracy):

- ``hard``: the answer's cross-entropy only (``train.distill.weight=0``, today's training);
- ``soft``: the decision token learns from the teacher's P(out) alone (KL, ``hard_decision=false``),
  the rest of the answer from the cross-entropy;
- ``both``: cross-entropy on the whole answer + ``weight`` x KL at the decision token.

Each student is scored on the test split with the fast decision path: balanced accuracy vs the
world's truth (with its 95 % interval), ECE and Brier vs the truth, ECE vs the teacher's label and
Brier vs the teacher's own P(out). The teacher's own ECE/Brier vs the truth is printed beside them.
Results go to ``RUN/soft_labels/results.json`` (one record per run; a rerun skips trained students) and a
markdown table (mean ± sd over seeds) to stdout. The world is synthetic: these are properties of a
toy, not results on real data. Not part of `make bench`'s measurements (hours on 2 cores); `make
bench` runs its smoke mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, smoke_flag  # noqa: E402

BENCH_ARGS = "smoke"
CONDITIONS = {
    "hard": {"weight": 0.0},
    "soft": {"weight": None, "hard_decision": False},
    "both": {"weight": None, "hard_decision": True},
}
#: (metrics.json key, column title, digits as percent?)
COLUMNS = (
    ("balanced_accuracy_vs_truth", "balanced acc vs truth", True),
    ("ece_vs_truth", "ECE vs truth", False),
    ("brier_vs_truth", "Brier vs truth", False),
    ("ece", "ECE vs teacher label", False),
    ("brier_vs_teacher_p", "Brier vs teacher P(out)", False),
)


def train_config(config: Path, steps: int, seed: int, condition: str, weight: float, temperature: float,
                 eval_steps: int):
    from scenefit.core.config import resolve

    cfg = resolve("train", config)
    distill = dict(CONDITIONS[condition])
    if distill["weight"] is None:
        distill["weight"] = weight
    distill["temperature"] = temperature
    return cfg.model_validate({
        **cfg.model_dump(), "max_steps": steps, "seed": seed, "eval_steps": eval_steps, "save_steps": None,
        "early_stopping_patience": None, "metric_for_best_model": "eval_decision_balanced_accuracy",
        "score_test": False, "report_to": [], "keep_checkpoints": False, "resume": True,
        "distill": {**cfg.distill.model_dump(), **distill},
    })


def score(students: Path, data: Path, criterion: str, config: Path) -> dict:
    """The test split's metrics of one student (fast decision path, no baseline, no shortcut test)."""
    from scenefit.core.config import resolve
    from scenefit.evaluate.runner import build_predictors, collect_answers, evaluate_answers
    from scenefit.evaluate.splits import load_split, row_sample

    ecfg = resolve("evaluate", config).model_copy(update={"criteria": [criterion], "baseline": False,
                                                          "explain": False, "split": "test"})
    frames = load_split(data, [criterion], "test")
    predictor, _ = build_predictors(students, ecfg)
    samples = [row_sample(r) for r in frames[criterion].to_dict("records")]
    answers, errors = collect_answers(predictor, samples, [criterion], explain=False, chunk=2 * ecfg.predict.batch_size)
    if errors:
        raise RuntimeError(f"{criterion}: {len(errors)} test samples failed, e.g. {errors[0]}")
    m = evaluate_answers(frames, answers, None, ecfg)[criterion]
    keep = [k for k, _, _ in COLUMNS] + ["balanced_accuracy_vs_truth_ci95", "accuracy_vs_truth", "n",
                                          "teacher_ece_vs_truth", "teacher_brier_vs_truth", "teacher_balanced_accuracy_vs_truth"]
    return {k: m.get(k) for k in keep}


def data_fingerprint(data: Path, criterion: str) -> str:
    """Hash of the rows a student learns and is scored on (ids, labels, targets, truth of every split),
    not of the probability columns: a hard-label run stays valid when only the probabilities are added."""
    import hashlib

    from scenefit.core.parquet_io import read_table

    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        df, _ = read_table(data / criterion / f"{split}.parquet")
        cols = [c for c in ("id", "label", "target", "truth") if c in df.columns]
        h.update(df[cols].astype(str).to_csv(index=False).encode())
    return h.hexdigest()[:12]


def students_folder(key: dict) -> str:
    return f"{key['data']}-{key['condition']}-w{key['weight']:g}-t{key['temperature']:g}-s{key['seed']}-n{key['steps']}"


def _fmt(values: list, pct: bool) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * sd:.1f} %" if pct else f"{mean:.3f} ± {sd:.3f}"


def table(records: list[dict]) -> str:
    lines = []
    for crit in sorted({r["criterion"] for r in records}):
        rows = [r for r in records if r["criterion"] == crit]
        seeds = sorted({r["seed"] for r in rows})
        teacher = next((r["metrics"] for r in rows if r["metrics"].get("teacher_ece_vs_truth") is not None),
                       rows[0]["metrics"])
        lines.append(f"\n{crit}: {len(seeds)} seeds ({', '.join(map(str, seeds))}), {rows[0]['steps']} steps, "
                     f"test n = {teacher['n']}; the designated teacher on the same rows: balanced acc vs truth "
                     f"{_fmt([teacher['teacher_balanced_accuracy_vs_truth']], True)}, ECE vs truth "
                     f"{_fmt([teacher['teacher_ece_vs_truth']], False)}, Brier vs truth "
                     f"{_fmt([teacher['teacher_brier_vs_truth']], False)}\n")
        lines.append("| condition | " + " | ".join(t for _, t, _ in COLUMNS) + " |")
        lines.append("|---" * (len(COLUMNS) + 1) + "|")
        for cond in CONDITIONS:
            got = [r for r in rows if r["condition"] == cond]
            if got:
                lines.append(f"| {cond} | " + " | ".join(_fmt([r["metrics"][k] for r in got], pct)
                                                      for k, _, pct in COLUMNS) + " |")
        # paired by seed (same LoRA init, same data order): the difference to hard of each seed
        hard = {r["seed"]: r["metrics"] for r in rows if r["condition"] == "hard"}
        for cond in [c for c in CONDITIONS if c != "hard"]:
            got = [r for r in rows if r["condition"] == cond and r["seed"] in hard]
            if got:
                diffs = [[None if r["metrics"][k] is None or hard[r["seed"]][k] is None
                          else r["metrics"][k] - hard[r["seed"]][k] for r in got] for k, _, _ in COLUMNS]
                lines.append(f"| {cond} − hard, same seed ({len(got)}) | "
                             + " | ".join(_fmt(d, pct) for d, (_, _, pct) in zip(diffs, COLUMNS)) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=Path("runs/soft"), help="folder with model/ and datasets/")
    ap.add_argument("--config", type=Path, default=Path("demo"))
    ap.add_argument("--criteria", nargs="+", default=["size"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-steps", type=int, default=100)
    ap.add_argument("--weight", type=float, default=1.0, help="lambda of soft and both")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--table-only", action="store_true", help="print the table of the results already measured")
    ap.add_argument("--rescore", action="store_true",
                    help="score again the students whose scores lack the teacher-probability numbers (trained and "
                    "scored before the datasets carried teacher_p_out)")
    smoke_flag(ap)
    args = ap.parse_args(argv)
    if args.smoke:
        from _students import small_run

        args.run = small_run()
        args.criteria, args.seeds, args.steps, args.eval_steps = ["location"], [0], 2, 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from scenefit.train.trainer import train_student

    out = args.run / "soft_labels"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    records = json.loads(results_path.read_text()) if results_path.is_file() else []
    if not args.table_only:
        for crit in args.criteria:
            data = data_fingerprint(args.run / "datasets", crit)
            for seed in args.seeds:
                for cond in args.conditions:
                    key = dict(criterion=crit, seed=seed, condition=cond, steps=args.steps, data=data,
                               weight=0.0 if cond == "hard" else args.weight,
                               temperature=1.0 if cond == "hard" else args.temperature)
                    if any({k: r.get(k) for k in key} == key for r in records):
                        continue
                    cfg = train_config(args.config, args.steps, seed, cond, args.weight, args.temperature,
                                       args.eval_steps)
                    students = out / students_folder(key)
                    t0 = time.time()
                    res = train_student(crit, args.run / "datasets", str(args.run / "model"), students, cfg)
                    t1 = time.time()
                    metrics = score(students, args.run / "datasets", crit, args.config)
                    rec = {**key, "students": str(students), "train_seconds": round(t1 - t0, 1), "best_checkpoint": res.metrics.get("best_checkpoint"),
                           "distill": res.metrics.get("distill"), "metrics": metrics, "synthetic": True}
                    records.append(rec)
                    results_path.write_text(json.dumps(records, indent=1))
                    print(f"{crit} seed {seed} {cond}: " + ", ".join(f"{k} {metrics[k]}" for k, _, _ in COLUMNS)
                          + f" ({t1 - t0:.0f} s training)", file=sys.stderr, flush=True)
    if args.rescore:
        for rec in records:
            if (rec["criterion"] in args.criteria and rec["metrics"].get("brier_vs_teacher_p") is None
                    and rec.get("data") == data_fingerprint(args.run / "datasets", rec["criterion"])):
                students = Path(rec.get("students") or out / students_folder(rec))
                rec["metrics"] = score(students, args.run / "datasets", rec["criterion"], args.config)
                rec["students"] = str(students)
        results_path.write_text(json.dumps(records, indent=1))
    print("SYNTHETIC world (a test bed, not a result on real data)")
    current = {c: data_fingerprint(args.run / "datasets", c) for c in args.criteria}
    same = [r for r in records if r["criterion"] in current and r.get("data") == current[r["criterion"]]
            and r["steps"] == args.steps and r["seed"] in args.seeds
            and (r["condition"] == "hard" or (r["weight"], r["temperature"]) == (args.weight, args.temperature))]
    print(table(same))
    for crit in args.criteria:
        hard = {r["seed"]: r["metrics"] for r in same if r["criterion"] == crit and r["condition"] == "hard"}
        for cond in ("soft", "both"):
            diffs = [r["metrics"]["balanced_accuracy_vs_truth"] - hard[r["seed"]]["balanced_accuracy_vs_truth"]
                     for r in same if r["criterion"] == crit and r["condition"] == cond and r["seed"] in hard
                     and r["metrics"].get("balanced_accuracy_vs_truth") is not None
                     and hard[r["seed"]].get("balanced_accuracy_vs_truth") is not None]
            if diffs:
                ratio(f"{crit}.{cond}_minus_hard.balanced_accuracy_vs_truth", statistics.fmean(diffs),
                      what=f"{crit}: balanced accuracy vs truth, {cond} minus hard labels, mean over {len(diffs)} "
                           f"seed(s) of the same-seed difference, {args.steps} steps (SYNTHETIC world)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
