"""Decision-first vs reasoning-first students on the synthetic world, same data and steps
(issue #16 item 5): balanced accuracy vs truth with 95 % intervals, reasoning consistency and
images/s of each path.

    nice -n 10 .venv/bin/python benchmarks/answer_format.py --run runs/demo --out runs/answer_format
    .venv/bin/python benchmarks/answer_format.py --smoke     # a small run built here, 2 steps: seconds

``--run`` is a folder holding the demo's ``split/`` and ``model/`` (`make demo`, or its first six
stages). For each answer format the script builds the datasets from that one split with
`the `demo` config`'s datasets section (only ``answer_format`` differs), trains the three
students with its train section (same seed, same steps; ``--max-steps`` overrides both alike),
evaluates them on the test split (the evaluate section with 128 new tokens; no baseline, no
shortcut test: they do not depend on the format) and times the Predictor on the test images: the decision-first fast path
(``explain=False``), decision-first with explanations, and reasoning-first (always generation).
Writes OUT/answer_format.json and prints a Markdown table. Every number is from the SYNTHETIC world.
Not part of `make bench`'s measurements (it trains six students: about an hour on 2 cores); `make
bench` runs its smoke mode.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from scenefit.core.config import packaged_configs_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import out_dir, ratio, smoke_flag  # noqa: E402

BENCH_ARGS = "smoke"
FORMATS = ("decision_first", "reasoning_first")
#: Generation bound of evaluation and timing, both formats (the demo's 48/64 fit decision-first answers only).
MAX_NEW_TOKENS = 128


def build(fmt: str, run: Path, out: Path, config: Path, max_steps: int | None) -> tuple[Path, Path, dict]:
    """datasets + train for one format; returns (datasets dir, students dir, train metrics per criterion)."""
    from scenefit.core.config import resolve
    from scenefit.core.files import file_sha256
    from scenefit.data.datasets import build_student_datasets, read_splits, write_student_datasets
    from scenefit.train.trainer import train_student

    data, students = out / fmt / "datasets", out / fmt / "students"
    dcfg = resolve("datasets", config, {"answer_format": fmt})
    if not (data / "manifest.json").is_file():
        splits, manifest = read_splits(run / "split")
        result = build_student_datasets(splits, dcfg, manifest)
        write_student_datasets(result, data, {f"{s}.parquet": file_sha256(run / "split" / f"{s}.parquet") for s in splits},
                               dcfg.license)
    tcfg = resolve("train", config, {"max_steps": max_steps} if max_steps else None)
    trained = {}
    for crit in tcfg.criteria:
        t0 = time.time()
        res = train_student(crit, data, str(run / "model"), students, tcfg)
        trained[crit] = {"global_step": res.metrics.get("global_step"), "skipped": res.skipped,
                         "train_seconds": round(time.time() - t0, 1),
                         "test_accuracy_vs_truth": (res.metrics.get("test") or {}).get("student", {}).get("accuracy_vs_truth")}
        print(f"{fmt}: {crit} trained ({trained[crit]})", file=sys.stderr)
    return data, students, trained


def evaluate(data: Path, students: Path, out: Path, config: Path, max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    from scenefit.core.config import resolve
    from scenefit.evaluate.runner import evaluate_dirs

    # 128 new tokens: a reasoning-first answer (~50 tokens) must not be cut before its decision line
    cfg = resolve("evaluate", config, {"baseline": False, "predict.max_new_tokens": max_new_tokens})
    metrics, _, _ = evaluate_dirs(students, data, out, cfg)
    return metrics


def images_per_second(students: Path, data: Path, config: Path, explain: bool, limit: int,
                      max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """Three criteria judged per image, on the test split's (already boxed) images; one warm-up batch first."""
    import pandas as pd

    from scenefit.core.config import resolve
    from scenefit.predict import PredictItem, Predictor

    cfg = resolve("predict", config, {"max_new_tokens": max_new_tokens})
    pred = Predictor.from_students(students, config=cfg)
    test = pd.read_parquet(data / "location" / "test.parquet").head(limit)
    items = [PredictItem(p, o, None, True, id=str(i))  # each row carries its image (scenefit datasets)
             for i, p, o in zip(test["id"], test["image"], test["object"])]
    pred.predict(items[: cfg.batch_size], explain=explain)  # warm-up
    t0 = time.perf_counter()
    out = pred.predict(items, explain=explain)
    seconds = time.perf_counter() - t0
    tokens = pred.generated_tokens
    return {"images": len(items), "seconds": round(seconds, 2), "images_per_s": round(len(items) / seconds, 2),
            "errors": sum(not p.ok for p in out),
            "mean_new_tokens": round(sum(tokens) / len(tokens), 1) if tokens else 0}


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _with_ci(block: dict, key: str) -> str:
    ci = block.get(f"{key}_ci95")
    return f"{pct(block.get(key))} [{pct(ci[0])}–{pct(ci[1])}]" if ci else pct(block.get(key))


def table(results: dict) -> str:
    """Markdown: per format and criterion, balanced accuracy and accuracy vs truth with their 95 %
    intervals, unreadable answers, reasoning consistency and ROUGE-L; then images/s per path."""
    lines = ["| answer format | criterion | balanced acc. vs truth [95 %] | accuracy vs truth [95 %] | unreadable "
             "| reasoning consistent | ROUGE-L | steps |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for fmt, r in results["formats"].items():
        m = r["metrics"]
        for crit in m["criteria"]:
            c = m[crit]
            lines.append(f"| {fmt} | {crit} | {_with_ci(c, 'balanced_accuracy_vs_truth')} | "
                         f"{_with_ci(c, 'accuracy_vs_truth')} | {c.get('unparseable')}/{c['n']} | "
                         f"{pct(c['reasoning'].get('consistent_share'))} | {c['reasoning'].get('rouge_l', 0):.2f} | "
                         f"{r['trained'][crit]['global_step']} |")
        if "fused" in m:
            f = m["fused"]
            lines.append(f"| {fmt} | fused ({f.get('ids')} ids) | {_with_ci(f, 'balanced_accuracy_vs_truth')} | "
                         f"{_with_ci(f, 'accuracy_vs_truth')} | | | | |")
    lines += ["", "| path | images/s (3 criteria each) | new tokens per answer |", "|---|---:|---:|"]
    for name, sp in results["speed"].items():
        lines.append(f"| {name} | {sp['images_per_s']} | {sp['mean_new_tokens']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "demo", help="folder with split/ and model/")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "answer_format")
    ap.add_argument("--config", type=Path, default=packaged_configs_dir() / "demo.yaml")
    ap.add_argument("--max-steps", type=int, default=None, help="override train.max_steps for both formats")
    ap.add_argument("--speed-images", type=int, default=64, help="test images timed per path")
    ap.add_argument("--table", type=Path, default=None, help="only print the table of an answer_format.json")
    ap.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="generation bound of evaluation and timing")
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        from _students import small_run

        args.out = out_dir("answer_format")
        args.run, args.max_steps, args.speed_images, args.max_new_tokens = small_run(), 2, 4, 8
    if args.table is not None:
        print(table(json.loads(args.table.read_text())))
        return
    for need in ("split", "model"):
        if not (args.run / need).is_dir():
            sys.exit(f"{args.run / need}: missing; run `make demo` (or its first six stages) first")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from scenefit import SYNTHETIC_NOTICE

    results: dict = {"notice": SYNTHETIC_NOTICE, "run": str(args.run), "config": str(args.config),
                     "max_steps": args.max_steps, "formats": {}, "speed": {}}
    built = {}
    for fmt in FORMATS:
        data, students, trained = build(fmt, args.run, args.out, args.config, args.max_steps)
        metrics = evaluate(data, students, args.out / fmt / "report", args.config, args.max_new_tokens)
        results["formats"][fmt] = {"trained": trained, "metrics": metrics}
        built[fmt] = (data, students)
    for name, fmt, explain in (("decision_first fast path", "decision_first", False),
                               ("decision_first + explanation", "decision_first", True),
                               ("reasoning_first (generation)", "reasoning_first", False)):
        results["speed"][name] = images_per_second(built[fmt][1], built[fmt][0], args.config, explain,
                                                   args.speed_images, args.max_new_tokens)
        print(f"{name}: {results['speed'][name]}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_format.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"> **{SYNTHETIC_NOTICE}**\n")
    print(table(results))
    speed = {name: sp["images_per_s"] for name, sp in results["speed"].items()}
    slow = speed["reasoning_first (generation)"]
    for name, key in (("decision_first fast path", "fast_path"), ("decision_first + explanation", "explained")):
        ratio(f"decision_first_{key}_vs_reasoning_first", speed[name] / slow,
              what=f"{name} {speed[name]:.3g} vs reasoning_first {slow:.3g} images/s (3 criteria each; SYNTHETIC world)")


if __name__ == "__main__":
    main()
