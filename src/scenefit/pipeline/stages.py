"""The stages `scenefit run` chains: what each one runs, when it is done, and its one line.

    from scenefit.pipeline.stages import stages_for
    for stage in stages_for(run):            # run: a RunFolder (RUN/run.yaml read back)
        print(stage.name, stage.state(run).status, stage.headline(run))

Each stage is one ``scenefit VERB`` writing one subfolder of the run. Whether a stage is done is
read from the file the stage itself writes last (its completion mark: ``world.json``,
``summary.json``, ``report.json``, a split's ``manifest.json``, a student's ``metrics.json``, …)
or, for annotate, from the store by the rule annotate skips by; a stage that is not done is run
again and resumes by its own rules (annotate asks only what the store lacks, train resumes from
its newest complete checkpoint). The runner keeps no record of its own.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    from scenefit.pipeline.run_folder import RunFolder

DONE, PARTIAL, NOT_STARTED = "done", "partial", "not started"


@dataclass(frozen=True)
class State:
    """Where one stage stands; ``detail`` says what is missing when it is partial."""

    status: str
    detail: str = ""


@dataclass(frozen=True)
class Stage:
    """One step of a run. ``argv(run, redo)`` gives the words after ``scenefit`` (``redo``:
    ``--from`` asked to run it again although it is done); a stage with ``argv`` None runs in
    the runner's own process (the demo's HTTP check)."""

    name: str
    title: str
    argv: Optional[Callable[["RunFolder", bool], list[str]]]
    state: Callable[["RunFolder"], State]
    headline: Callable[["RunFolder"], str]


# ------------------------------------------------------------------------------- helpers

def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _marked(folder: Path, *marks: str) -> State:
    """Done when every completion mark is in ``folder``; partial when the folder holds anything."""
    if all((folder / m).is_file() for m in marks):
        return State(DONE)
    if folder.is_dir() and any(folder.iterdir()):
        return State(PARTIAL, f"{folder.name}/ has files but no {marks[-1]}")
    return State(NOT_STARTED)


# ------------------------------------------------------------------------------- tiny-model

def _model_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["tiny-model", str(run.model), "--config", str(run.config_file)]


def _model_state(run: "RunFolder") -> State:
    try:
        _json(run.model / "scenefit_tiny.json")
        return State(DONE)
    except (OSError, ValueError):
        return _marked(run.model, "scenefit_tiny.json")


def _model_line(run: "RunFolder") -> str:
    info = _json(run.model / "scenefit_tiny.json")
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


# ------------------------------------------------------------------------------- synth

def _world_argv(run: "RunFolder", redo: bool) -> list[str]:
    # synth runs only when the world is not done or --from asks again: a folder a kill left half
    # drawn (no world.json) or a world of the old world section is replaced (synth's --overwrite
    # removes only the files synth writes, and RUN/world holds nothing else)
    return ["synth", "--out", str(run.world), "--config", str(run.config_file), "--overwrite"]


def _world_line(run: "RunFolder") -> str:
    c = _json(run.world / "world.json")["counts"]
    return f"{c['samples']:,} samples on {c['groups']:,} scenes, {c['originals']:,} originals for the shortcut test"


# ------------------------------------------------------------------------------- ingest

def _ingest_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["ingest", str(run.samples_manifest), "--out", str(run.ingest), "--config", str(run.config_file)]


def _ingest_state(run: "RunFolder") -> State:
    """Done when ingest finished and kept a sample: one that rejected every row (images not there
    yet, another layout) runs again, so the same command continues once the cause is fixed."""
    state = _marked(run.ingest, "manifest.parquet", "summary.json")
    if state.status == DONE:
        try:
            kept = _json(run.ingest / "summary.json")["ok"]
        except (OSError, ValueError, KeyError, TypeError):
            return State(PARTIAL, "ingest/summary.json unreadable")
        if not kept:
            return State(PARTIAL, f"no sample kept: every row rejected ({run.ingest / 'errors.jsonl'})")
    return state


def _ingest_line(run: "RunFolder") -> str:
    s = _json(run.ingest / "summary.json")
    return f"{s['ok']:,} samples kept, {s['rejected']:,} rejected (errors.jsonl)"


# ------------------------------------------------------------------------------- annotate

def _annotate_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["annotate", str(run.ingest / "manifest.parquet"), "--db", str(run.db), "--config", str(run.config_file)]


def _annotate_state(run: "RunFolder") -> State:
    """Done when no configured teacher has a sample left to answer, by annotate's own skip rule."""
    if not run.db.is_file():
        return State(NOT_STARTED)
    manifest = run.ingest / "manifest.parquet"
    if not manifest.is_file():
        return State(PARTIAL, "the store exists but ingest's manifest does not")
    from scenefit.data.manifest import read_manifest
    from scenefit.teachers.annotate import missing_answers
    from scenefit.teachers.store import AnnotationStore

    samples, _ = read_manifest(manifest)
    with AnnotationStore(run.db) as store:
        missing = missing_answers(samples, run.section("annotate"), store)
    left = {t: n for t, n in missing.items() if n}
    if not left:
        return State(DONE)
    return State(PARTIAL, "answers to ask: " + ", ".join(f"{t} {n:,}" for t, n in left.items()))


def _annotate_line(run: "RunFolder") -> str:
    con = sqlite3.connect(f"file:{run.db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT teacher, COUNT(*), SUM(status = 'failed'), SUM(status = 'unparseable') "
                           "FROM annotations GROUP BY teacher").fetchall()
    finally:
        con.close()
    total, failed, bad = (sum(r[i] or 0 for r in rows) for i in (1, 2, 3))
    return (f"{total:,} answers from {len(rows)} teacher{'s' if len(rows) != 1 else ''} stored, "
            f"{failed:,} failed requests, {bad:,} unparseable")


# ------------------------------------------------------------------------------- consensus

def _consensus_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["consensus", "--db", str(run.db), "--manifest", str(run.ingest / "manifest.parquet"),
            "--out", str(run.consensus), "--config", str(run.config_file)]


def _consensus_line(run: "RunFolder") -> str:
    r = _json(run.consensus / "report.json")
    line = f"{r['samples']['kept']:,} of {r['samples']['manifest']:,} kept ({r['rule']})"
    accuracy = r.get("accuracy") or {}
    after = (accuracy.get("after") or {}).get(r["rule"], {}).get("final", {}).get("accuracy")
    before = (accuracy.get("before") or {}).get("final", {}).get("accuracy")
    if after is not None or before is not None:
        line += (f"; final label vs truth {_pct(before)} for the designated teacher alone -> "
                 f"{_pct(after)} on the kept")
    return line


# ------------------------------------------------------------------------------- split, datasets

def _split_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["split", str(run.consensus / "consensus.parquet"), "--out", str(run.split), "--config", str(run.config_file)]


def _split_line(run: "RunFolder") -> str:
    c = _json(run.split / "manifest.json")["counts"]
    return "train / val / test = " + " / ".join(f"{c.get(s, 0):,}" for s in ("train", "val", "test")) + " (1:1 final)"


def _datasets_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["datasets", str(run.split), "--out", str(run.datasets), "--config", str(run.config_file)]


def _datasets_line(run: "RunFolder") -> str:
    m = _json(run.datasets / "manifest.json")
    parts = [f"{c} {'/'.join(str(i['splits'][s]['rows']) for s in ('train', 'val', 'test') if s in i['splits'])}"
             for c, i in m["criteria"].items()]
    balanced = ", ".join(m.get("rebalance") or []) or "none"
    return "rows train/val/test: " + "; ".join(parts) + f" (balanced 1:1: {balanced})"


# ------------------------------------------------------------------------------- train

def _train_argv(run: "RunFolder", redo: bool) -> list[str]:
    words = ["train", "--criterion", "all", "--data", str(run.datasets), "--out", str(run.students),
             "--config", str(run.config_file)]
    if run.settings.tiny_base:
        words += ["--model", str(run.model)]
    # --from train (or earlier): the datasets may have changed, so finished students are trained
    # again; without --from a rerun keeps them and resumes the others (train's own rule)
    return words + (["--overwrite"] if redo else [])


def _criteria(run: "RunFolder") -> list[str]:
    return list(run.section("train").criteria)


def _train_state(run: "RunFolder") -> State:
    from scenefit.train.checkpoints import is_trained

    trained = [c for c in _criteria(run) if is_trained(run.students / c)]
    if len(trained) == len(_criteria(run)):
        return State(DONE)
    if trained or (run.students.is_dir() and any(run.students.iterdir())):
        todo = [c for c in _criteria(run) if c not in trained]
        return State(PARTIAL, f"trained: {', '.join(trained) or 'none'}; to train or resume: {', '.join(todo)}")
    return State(NOT_STARTED)


def _train_line(run: "RunFolder") -> str:
    tests = {c: _json(run.students / c / "metrics.json").get("test") or {} for c in _criteria(run)}
    truth = all((t.get("student") or {}).get("accuracy_vs_truth") is not None for t in tests.values())
    key = "accuracy_vs_truth" if truth else "accuracy"
    parts = [f"{c} {_pct((t.get('student') or {}).get(key))} (base {_pct((t.get('base') or {}).get(key))})"
             for c, t in tests.items()]
    return f"test decisions vs {'truth' if truth else 'teacher labels'}: " + "; ".join(parts)


# ------------------------------------------------------------------------------- evaluate

def _evaluate_argv(run: "RunFolder", redo: bool) -> list[str]:
    return ["evaluate", "--students", str(run.students), "--data", str(run.datasets), "--out", str(run.report),
            "--config", str(run.config_file)]


def _evaluate_line(run: "RunFolder") -> str:
    m = _json(run.report / "metrics.json")
    parts, ref = [], "truth"
    for c in m.get("criteria", []) + ["fused"]:
        r = m.get(c) or {}
        if r.get("accuracy_vs_truth") is not None:
            parts.append(f"{c} {_pct(r['accuracy_vs_truth'])} (n {r.get('n')})")
        elif r.get("accuracy") is not None:
            ref = "teacher labels"
            parts.append(f"{c} {_pct(r['accuracy'])} (n {r.get('n')})")
    return f"vs {ref}: " + "; ".join(parts) + " — report.html"


# ------------------------------------------------------------------------------- serve (the demo's check)

def _serve_line(run: "RunFolder") -> str:
    from scenefit.pipeline.serve_check import verdict_lines

    return "\n".join(verdict_lines(_json(run.serve / "classify.json")))


# ------------------------------------------------------------------------------- the table

MODEL = Stage("tiny-model", "tiny Qwen2.5-VL, the students' base (local tokenizer; vision and knowledge pretraining)",
              _model_argv, _model_state, _model_line)
WORLD = Stage("synth", "synthetic world (scenes with one boxed object, known truth)",
              _world_argv, lambda run: _marked(run.world, "world.json"), _world_line)
INGEST = Stage("ingest", "ingest (validate images and boxes, normalised manifest, errors.jsonl)",
               _ingest_argv, _ingest_state, _ingest_line)
ANNOTATE = Stage("annotate", "annotate (the teachers answer every sample; resumable SQLite store)",
                 _annotate_argv, _annotate_state, _annotate_line)
CONSENSUS = Stage("consensus", "consensus (the teachers' agreement; the samples they agree on)",
                  _consensus_argv, lambda run: _marked(run.consensus, "consensus.parquet", "report.json"), _consensus_line)
SPLIT = Stage("split", "split (balanced 1:1 on the final decision, group-aware, seeded)",
              _split_argv, lambda run: _marked(run.split, "manifest.json"), _split_line)
DATASETS = Stage("datasets", "student datasets (one chat-format dataset per criterion, with a dataset card)",
                 _datasets_argv, lambda run: _marked(run.datasets, "manifest.json"), _datasets_line)
TRAIN = Stage("train", "train the three students (LoRA, answer-only loss; resumes from checkpoints)",
              _train_argv, _train_state, _train_line)
EVALUATE = Stage("evaluate", "evaluate (students vs teacher labels and truth, the untrained base, report.html)",
                 _evaluate_argv, lambda run: _marked(run.report, "metrics.json", "report.html"), _evaluate_line)
SERVE = Stage("serve", "serve the students on 127.0.0.1 and classify one test image over HTTP",
              None, lambda run: _marked(run.serve, "classify.json"), _serve_line)


def stages_for(run: "RunFolder") -> list[Stage]:
    """The stages of this run, in order: the tiny base and the synthetic world when the run's
    settings ask for them, the pipeline, and the demo's serving check."""
    out = [MODEL] if run.settings.tiny_base else []
    if run.settings.manifest is None:
        out.append(WORLD)
    out += [INGEST, ANNOTATE, CONSENSUS, SPLIT, DATASETS, TRAIN, EVALUATE]
    if run.settings.serve_check:
        out.append(SERVE)
    return out


def headline(stage: Stage, run: "RunFolder") -> str:
    """The stage's one line, or why there is none (a headline never fails a run or a status)."""
    try:
        return stage.headline(run)
    except (OSError, KeyError, TypeError, ValueError, AttributeError, IndexError, sqlite3.Error) as e:
        return f"(no summary: {type(e).__name__}: {e})"
