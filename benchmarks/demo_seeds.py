"""The demo's headline over seeds, beside what it is measured against (issue #30 item 4).

    nice -n 10 .venv/bin/python benchmarks/demo_seeds.py --out runs/demo_seeds            # 3 seeds + ablation
    .venv/bin/python benchmarks/demo_seeds.py --smoke                                      # ~1 min, tiny sizes, a scratch folder

For each seed k (0 = ``make demo`` itself) the whole demo pipeline runs on the demo config with
every seed in it moved by ``k * SEED_STRIDE`` (the tiny model's weights and both pretraining
worlds, the demo world, the split, the datasets, the training): tiny-model, synth, ingest,
annotate, consensus, split, datasets, train, evaluate — the verbs and arguments of ``make demo``,
run in this process, each stage's output in ``OUT/seed-k/logs/``. Evaluation also fits the
linear probe on the frozen base (``evaluate.probe``). Then the **ablation**: seed 0's pipeline
again (the same world, labels and datasets: they do not depend on the model) with a tiny base that
is *not* pretrained (no vision, no knowledge pretraining). Stages finished with the same config
and code are skipped on a rerun (``OUT/seed-k/.done/``); ``--only`` runs one part, so parts can
run side by side.

The table (mean ± standard deviation over the seeds, min–max beside it; balanced accuracy vs
the synthetic truth on each seed's test split) goes to stdout, to ``OUT/table.md`` and, unless
``--no-write``, into ``--doc`` (default docs/demo-results.md) between the markers
``<!-- demo-seeds:begin -->`` and ``<!-- demo-seeds:end -->``. Columns: the students; the
students on the base without pretraining (ablation); the linear probe on the frozen pretrained
base (the informative baseline); the designated teacher's own labels; the untrained base's
answers (a floor); the majority class; the shortcut test's in-context share on unmodified images
with the students' out-of-context recall on the test split beside it; and the stage-1 record
(held-out person-ratio bin and ground-line accuracy of the vision pretraining).

Torch runs on ``--threads`` threads (default 1: the figures then do not depend on the number of
cores; see docs/demo-results.md for what does move them). SYNTHETIC: properties of a ~1 M-parameter
toy on a drawn world, not results on real data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import out_dir, ratio  # noqa: E402

#: make bench: the smoke run only (the full run trains the demo four times: hours on 2 cores).
BENCH_ARGS = "smoke"
#: Seed k moves every seed of the config by k * SEED_STRIDE (apart from each other for any k).
SEED_STRIDE = 1000
#: Every seed of the demo config, as (section, key).
SEED_KEYS = (("tiny_model", "seed"), ("tiny_model", "vision_pretrain_seed"), ("tiny_model", "knowledge_pretrain_seed"),
             ("world", "seed"), ("split", "seed"), ("datasets", "seed"), ("train", "seed"))
BEGIN, END = "<!-- demo-seeds:begin -->", "<!-- demo-seeds:end -->"
CRITERIA = ("location", "size", "co_occurrence", "fused")
#: --smoke: the same pipeline at toy sizes (seconds per stage), to test the script itself.
SMOKE = {
    "tiny_model": {"vision_pretrain_steps": 3, "vision_pretrain_images": 32, "knowledge_pretrain_steps": 3,
                   "knowledge_pretrain_images": 32},
    "world": {"n": 96},
    "train": {"max_steps": 4, "eval_steps": 2, "eval_samples": 8, "per_device_eval_batch_size": 8},
    "evaluate": {"originals_limit": 8, "limit": 16, "explain": False},
}


def default_config() -> Path:
    """The packaged demo config (`--config demo`)."""
    from scenefit.core.config import find_config

    return find_config("demo")


def seeded_config(base: dict, k: int, smoke: bool, pretrained: bool = True) -> dict:
    """The demo config for seed ``k`` (every seed moved by k * SEED_STRIDE); toy sizes with
    ``smoke``; no pretraining of the tiny base unless ``pretrained``."""
    cfg = json.loads(json.dumps(base))
    for section, key in SEED_KEYS:
        cfg.setdefault(section, {})[key] = int(cfg[section].get(key, 0)) + k * SEED_STRIDE
    if smoke:
        for section, values in SMOKE.items():
            cfg.setdefault(section, {}).update(values)
    if not pretrained:
        cfg["tiny_model"].update(vision_pretrain_steps=0, knowledge_pretrain_steps=0)
    cfg.setdefault("evaluate", {})["probe"] = True
    return cfg


def run_verb(args: list[str], log: Path, stdout: Optional[Path] = None) -> None:
    """One scenefit verb in this process, its output in ``log`` (and its stdout in ``stdout``)."""
    from scenefit.cli import app

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err, open(stdout or log, "a") as out, \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            app(args, standalone_mode=False)
        except SystemExit as e:
            if e.code not in (0, None):
                raise RuntimeError(f"scenefit {args[0]} exited {e.code}; see {log}") from None


def pipeline(d: Path, config: Path, stages: list[str]) -> dict[str, float]:
    """The demo's stages into ``d`` (``make demo``'s arguments), skipping those already done with
    the same config and code (a stage after a redone one is redone too). Returns the seconds each
    stage took in this call."""
    import hashlib

    from scenefit.testbed.tiny_cache import code_digest

    c = str(config)
    version = hashlib.sha256(config.read_bytes() + code_digest().encode()).hexdigest()[:16]
    commands = {
        "model": (["tiny-model", f"{d}/model", "--config", c], None),
        "world": (["synth", "--config", c, "--out", f"{d}/world"], None),
        "ingest": (["ingest", f"{d}/world/manifest.parquet", "--out", f"{d}/ingest", "--config", c], None),
        "annotate": (["annotate", f"{d}/ingest/manifest.parquet", "--db", f"{d}/annotate/annotations.sqlite",
                      "--config", c], None),
        "consensus": (["consensus", "--db", f"{d}/annotate/annotations.sqlite", "--manifest",
                       f"{d}/ingest/manifest.parquet", "--out", f"{d}/consensus", "--config", c], None),
        "split": (["split", f"{d}/consensus/consensus.parquet", "--out", f"{d}/split", "--config", c], None),
        "datasets": (["datasets", f"{d}/split", "--out", f"{d}/datasets", "--config", c], None),
        "train": (["train", "--criterion", "all", "--data", f"{d}/datasets", "--model", f"{d}/model", "--out",
                   f"{d}/students", "--config", c], d / "students.json"),
        "evaluate": (["evaluate", "--students", f"{d}/students", "--data", f"{d}/datasets", "--split", "test",
                      "--out", f"{d}/report", "--originals", f"{d}/world/originals/manifest.parquet", "--config", c],
                     None),
    }
    outputs = {name: [d / name] for name in stages}
    outputs.update(model=[d / "model"], train=[d / "students", d / "students.json"], evaluate=[d / "report"])
    seconds = {}
    redo = False
    for name in stages:
        done = d / ".done" / name
        if not redo and done.is_file() and json.loads(done.read_text()).get("version") == version:
            continue
        redo = True
        args, stdout = commands[name]
        # The verbs resume: a finished student or a full answer store would be kept as it is, so a
        # stage redone for a new config or code starts from nothing.
        for old in outputs[name]:
            if old.is_dir():
                shutil.rmtree(old)
            else:
                old.unlink(missing_ok=True)
        t0 = time.time()
        run_verb(args, d / "logs" / f"{name}.log", stdout)
        seconds[name] = round(time.time() - t0, 1)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps({"seconds": seconds[name], "version": version}))
        print(f"  {d.name}: {name} {seconds[name]:.0f} s", file=sys.stderr, flush=True)
    return seconds


def recorded_seconds(d: Path) -> float:
    """The wall seconds of a part's stages, as recorded when each ran (a rerun that reuses a stage
    adds nothing, so the table's total does not depend on how often the script was called)."""
    return sum(json.loads(f.read_text()).get("seconds", 0) for f in (d / ".done").glob("*"))


def write_config(cfg: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# ---------------------------------------------------------------- the table

def read_run(d: Path) -> dict[str, Any]:
    """The figures of one run: per criterion (and fused) from its report, plus stage 1's record."""
    m = json.loads((d / "report" / "metrics.json").read_text())
    sc = m.get("shortcut") or {}
    out: dict[str, Any] = {}
    for name in CRITERIA:
        c = m.get(name) or {}
        out[name] = {
            "student": c.get("balanced_accuracy_vs_truth"), "floor": c.get("baseline_balanced_accuracy_vs_truth"),
            "probe": c.get("probe_balanced_accuracy_vs_truth"), "teacher": c.get("teacher_balanced_accuracy_vs_truth"),
            "majority": c.get("majority_rate_vs_truth"),
            "shortcut": (sc.get("in_context_share") or {}).get(name),
            "recall": (sc.get("recall_out_on_split") or {}).get(name),
        }
    tiny = json.loads((d / "model" / "scenefit_tiny.json").read_text())
    vp = tiny.get("vision_pretraining") or {}
    out["stage1"] = {"person_ratio_bin": vp.get("person_ratio_bin_accuracy_after"),
                     "ground_line": vp.get("ground_line_accuracy_after"), "built_with": tiny.get("built_with")}
    return out


def spread(values: list[Optional[float]]) -> str:
    """``mean ± sd (min–max)`` in percent over the values that exist ("–" when none)."""
    vals = [100 * v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f} ({min(vals):.1f}–{max(vals):.1f})"


def table(runs: dict[int, dict], ablation: Optional[dict], smoke: bool, threads: int, seconds: float) -> str:
    import torch

    seeds = sorted(runs)
    header = ("| criterion | students | students, base not pretrained (ablation) | linear probe on the frozen base "
              "| designated teacher | untrained base (floor) | majority class | shortcut: in-context share "
              "| students' Out recall (test) |")
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for name in CRITERIA:
        col = lambda key: spread([runs[s][name][key] for s in seeds])  # noqa: E731
        abl = spread([ablation[name]["student"]]) if ablation else "–"
        lines.append(f"| {name.replace('_', '-')} | **{col('student')}** | {abl} | {col('probe')} | {col('teacher')} "
                     f"| {col('floor')} | {col('majority')} | {col('shortcut')} | {col('recall')} |")
    s1 = [runs[s]["stage1"] for s in seeds]
    built = s1[0].get("built_with") or {}
    note = (f"Balanced accuracy vs the synthetic truth on each seed's test split, percent: mean ± sd (min–max) over "
            f"{len(seeds)} seed(s) {seeds} (seed k moves every seed of the demo config by {SEED_STRIDE}·k); the "
            "ablation is one run on seed 0's datasets. Stage 1 (vision pretraining, held-out): person-ratio bin "
            f"{spread([r['person_ratio_bin'] for r in s1])}, ground line {spread([r['ground_line'] for r in s1])}. "
            f"Measured {date.today().isoformat()} by `benchmarks/demo_seeds.py{' --smoke' if smoke else ''}` with torch "
            f"{torch.__version__} on {threads} thread(s), CPU capability {built.get('cpu_capability')}, "
            f"{platform.machine()}; {seconds / 60:.0f} min of stages in all (each stage's wall time as recorded "
            "when it ran; parts may have run side by side).")
    if smoke:
        note = "SMOKE RUN (toy sizes: the figures mean nothing). " + note
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_between_markers(doc: Path, text: str) -> None:
    """Replace what lies between BEGIN and END in ``doc`` (appended at the end when absent)."""
    from scenefit.core.files import atomic_write_text

    body = doc.read_text() if doc.is_file() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in body and END in body:
        body = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, body, count=1, flags=re.S)
    else:
        body = body.rstrip("\n") + ("\n\n" if body else "") + block + "\n"
    atomic_write_text(body, doc)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None,
                    help="Folder of the runs (resumable; default runs/demo_seeds, with --smoke a new scratch folder).")
    ap.add_argument("--seeds", type=int, default=3, help="Number of seeds (0 .. N-1); at least 3 for the docs.")
    ap.add_argument("--config", type=Path, default=None, help="Demo config (default: the packaged/shipped demo.yaml).")
    ap.add_argument("--no-ablation", action="store_true", help="Skip the run on a base without pretraining.")
    ap.add_argument("--threads", type=int, default=1, help="Torch threads (default 1).")
    ap.add_argument("--smoke", action="store_true", help="Toy sizes: checks the script end to end in about a minute.")
    ap.add_argument("--doc", type=Path, default=None,
                    help="Markdown file to write the table into (default docs/demo-results.md; with --smoke OUT/doc.md).")
    ap.add_argument("--no-write", action="store_true", help="Print the table only.")
    ap.add_argument("--only", default=None, help="Run one part and stop without a table: seed-K, or ablation "
                    "; to run parts side by side, then rerun without it for the table.")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = out_dir("demo_seeds") if args.smoke else REPO / "runs" / "demo_seeds"
    if args.doc is None:  # a smoke run never writes its meaningless table into the docs
        args.doc = args.out / "doc.md" if args.smoke else REPO / "docs" / "demo-results.md"

    import torch

    torch.set_num_threads(args.threads)
    base = yaml.safe_load((args.config or default_config()).read_text())
    stages = ["model", "world", "ingest", "annotate", "consensus", "split", "datasets", "train", "evaluate"]
    runs = {}
    for k in range(args.seeds):
        d = args.out / f"seed-{k}"
        if args.only in (None, d.name):
            cfg = write_config(seeded_config(base, k, args.smoke), d / "config.yaml")
            pipeline(d, cfg, stages)
            runs[k] = read_run(d)
    ablation = None
    if args.only not in (None, "ablation"):
        return 0
    if not args.no_ablation:
        d = args.out / "ablation-not-pretrained"
        cfg = write_config(seeded_config(base, 0, args.smoke, pretrained=False), d / "config.yaml")
        pipeline(d, cfg, stages)
        ablation = read_run(d)
        if args.only:
            return 0
    parts = [args.out / f"seed-{k}" for k in runs] + ([args.out / "ablation-not-pretrained"] if ablation else [])
    text = table(runs, ablation, args.smoke, args.threads, sum(recorded_seconds(d) for d in parts))
    (args.out / "table.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"runs": runs, "ablation": ablation}, indent=2, default=str))
    print(text)
    if not args.no_write:
        write_between_markers(args.doc, text)
        print(f"table written into {args.doc}", file=sys.stderr)
    for name in CRITERIA:
        pairs = [(r[name]["student"], r[name]["probe"]) for r in runs.values()
                 if r[name]["student"] is not None and r[name]["probe"] is not None]
        if pairs:
            diff = statistics.mean(100 * (s - p) for s, p in pairs)
            ratio(f"{name}.students_minus_probe_points", diff,
                  what=f"{name}: balanced accuracy vs truth, the students minus the linear probe on the frozen base, "
                       f"mean over {len(pairs)} seed(s), points{' (SMOKE: toy sizes, no meaning)' if args.smoke else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
