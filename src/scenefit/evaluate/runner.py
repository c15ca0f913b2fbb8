"""Run the students (and the untrained base) on a dataset split and turn their answers into
the metrics dict, the gallery and the report files.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --split test \
        --out runs/demo/report --config demo

    from scenefit.evaluate.runner import evaluate_dirs
    metrics = evaluate_dirs("runs/demo/students", "runs/demo/datasets", "runs/demo/report", EvaluateConfig())

The model-free part (:func:`evaluate_answers`) takes answers already collected, so it is
tested on hand-made answers; :func:`collect_answers` drives any object with the
``predict(items, explain=..., criteria=[...])`` method of :class:`scenefit.predict.Predictor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import Criterion, Label
from scenefit.core.errors import error_row
from scenefit.core.files import write_jsonl
from scenefit.core.images import stored_image_name
from scenefit.core.progress import Progress
from scenefit.core.records import Sample, is_synthetic
from scenefit.evaluate.config import EvaluateConfig
from scenefit.evaluate.metrics import (
    CONVENTIONS,
    HEADLINE_KEYS,
    as_label,
    criteria_order,
    error_breakdown,
    fuse_by_id,
    headline_key,
    label_metrics,
    reliability,
    top_confusions,
)
from scenefit.evaluate.reasoning import RULE_SUMMARY, reasoning_metrics
from scenefit.evaluate.shortcut import originals_in_split, shortcut_metrics
from scenefit.evaluate.splits import EvaluateError, clean_cell, load_split, row_sample
from scenefit.predict.items import PredictItem


@dataclass(frozen=True)
class Answer:
    """One model's answer on one criterion for one sample (label None = unparseable)."""

    id: str
    label: Optional[Label]
    p_out: Optional[float] = None  # probability of out-of-context, when the model scored it
    analysis: Optional[str] = None
    raw: Optional[str] = None
    status: str = "ok"
    fast_label: Optional[Label] = None  # the logits' decision after the forced prefix (decision-first students)


# ---------------------------------------------------------------- inputs

# ---------------------------------------------------------------- answers from a predictor

def _field(obj: Any, *names: str) -> Any:
    for n in names:
        if isinstance(obj, dict) and n in obj:
            return obj[n]
        if hasattr(obj, n):
            return getattr(obj, n)
    return None


def answer_of(prediction: Any, criterion: Criterion, sample_id: str) -> Answer:
    """Read one criterion's answer out of a :class:`scenefit.predict.Prediction`.

    With an explanation (``raw`` set) the label is the one parsed from the generated text
    (``generated_label``): the predictor falls back to the decision logits when that text is
    unreadable, but evaluation must count such an answer as unparseable. Without one (fast
    path) the label is the logits' decision. ``p_out`` is the decision softmax's probability
    of out-of-context (else derived from ``probability``, which is that of ``label``).
    """
    per = _field(prediction, "criteria")
    res = None
    if isinstance(per, dict):
        res = per.get(criterion, per.get(criterion.value))
    if res is None:
        return Answer(sample_id, None, status="missing")
    raw = _field(res, "raw")
    explained = raw is not None and (hasattr(res, "generated_label") or (isinstance(res, dict) and "generated_label" in res))
    label = as_label(_field(res, "generated_label") if explained else _field(res, "label"))
    p_out = _field(res, "p_out")
    if p_out is None:
        prob = _field(res, "probability")
        if prob is not None and label is not None:
            p_out = float(prob) if label is Label.OUT else 1.0 - float(prob)
    status = _field(res, "status") or ("ok" if label is not None else "unparseable")
    return Answer(sample_id, label, None if p_out is None else float(p_out), _field(res, "analysis"), raw, str(status),
                  as_label(_field(res, "fast_label")))


class BaseOnly:
    """The students' predictor with its adapters switched off: the untrained base as baseline,
    without loading the base model a second time."""

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.base = getattr(predictor, "base", None)

    def predict(self, items, explain: bool = False, criteria=None):
        return self.predictor.predict(items, explain=explain, criteria=criteria, use_adapters=False)


def collect_answers(
    predictor: Any, samples: Sequence[Sample | PredictItem], criteria: Sequence[str], explain: bool, chunk: int = 32,
    progress: Optional[Progress] = None, box_width: Optional[int] = None,
) -> tuple[dict[str, list[Answer]], list[dict]]:
    """Answers per criterion for every sample, and one error dict per sample that failed.

    Samples go to the predictor in chunks (for the progress bar); a chunk that raises is
    retried one sample at a time so one bad image does not sink the batch. ``box_width``: the
    red box's width on samples the predictor boxes (None: the predictor's own rule).
    """
    crits = [Criterion(c) for c in criteria_order(criteria)]
    extra = {} if box_width is None else {"box_width": box_width}
    out: dict[str, list[Answer]] = {c.value: [] for c in crits}
    errors: list[dict] = []

    def _take(part: Sequence[Sample | PredictItem], preds: Sequence[Any]) -> None:
        if len(preds) != len(part):
            raise RuntimeError(f"the predictor returned {len(preds)} predictions for {len(part)} items")
        for smp, pred in zip(part, preds):
            err = _field(pred, "error")
            if err:  # the predictor could not judge this item (missing image, bad box, ...)
                code, message = (err.get("code"), err.get("message")) if isinstance(err, dict) else ("error", str(err))
                errors.append(error_row(smp.id, code, message, image=stored_image_name(smp.image)))
                continue
            for c in crits:
                out[c.value].append(answer_of(pred, c, smp.id))

    for start in range(0, len(samples), chunk):
        part = list(samples[start:start + chunk])
        try:
            _take(part, predictor.predict(part, explain=explain, criteria=crits, **extra))
        except Exception:  # noqa: BLE001 — isolate the sample(s) at fault, keep the rest
            for smp in part:
                try:
                    _take([smp], predictor.predict([smp], explain=explain, criteria=crits, **extra))
                except Exception as e:  # noqa: BLE001
                    errors.append(error_row(smp.id, "prediction_failed", f"{type(e).__name__}: {e}",
                                            image=stored_image_name(smp.image)))
        if progress:
            progress.advance(len(part))
    return out, errors


# ---------------------------------------------------------------- metrics from answers

def _labels(answers: Sequence[Answer]) -> list[Optional[Label]]:
    return [a.label for a in answers]


def _truth_known(values: Sequence[Any]) -> bool:
    return any(as_label(v) is not None for v in values)


def _headline_keys(block: Optional[dict[str, Any]], prefix: str = "", suffix: str = "") -> dict[str, Any]:
    """HEADLINE_KEYS of one label_metrics block under their metrics.json names (None without a block)."""
    return {headline_key(k, prefix, suffix): (block[k] if block else None) for k in HEADLINE_KEYS}


def _headline(
    display: str, teacher: Sequence[Any], truth: Sequence[Any], student: Sequence[Optional[Label]],
    baseline: Optional[Sequence[Optional[Label]]],
) -> dict[str, Any]:
    """Headline keys (the metrics.json contract) and the full blocks behind them: student and
    baseline vs the teacher's labels, and — where any truth is known — student, baseline and
    teacher vs the truth."""
    s = label_metrics(teacher, student)
    b = label_metrics(teacher, baseline) if baseline is not None else None
    m: dict[str, Any] = {
        "display": display, "n": s["n"],
        **_headline_keys(s),
        **{k: s[k] for k in ("accuracy_parseable", "precision_out", "recall_out", "f1_out", "kappa", "unparseable",
                             "unparseable_share")},
        **_headline_keys(b, "baseline_"),
        **{f"baseline_{k}": (b[k] if b else None) for k in ("f1_out", "unparseable")},
        **_headline_keys(None, suffix="_vs_truth"), **_headline_keys(None, "baseline_", "_vs_truth"),
        **_headline_keys(None, "teacher_", "_vs_truth"),
        "student": s, "baseline": b, "vs_truth": None,
    }
    if _truth_known(truth):
        vs = {"student": label_metrics(truth, student), "teacher": label_metrics(truth, teacher),
              "baseline": label_metrics(truth, baseline) if baseline is not None else None}
        m["vs_truth"] = vs
        m.update(_headline_keys(vs["student"], suffix="_vs_truth"))
        m.update(_headline_keys(vs["teacher"], "teacher_", "_vs_truth"))
        m.update(_headline_keys(vs["baseline"], "baseline_", "_vs_truth"))
    return m


#: dataset column of the designated teacher's P(out-of-context) (scenefit datasets; null when unknown)
TEACHER_P_COLUMN = "teacher_p_out"


def calibration_blocks(p_out: Sequence[Optional[float]], df: pd.DataFrame, bins: int) -> dict[str, Any]:
    """The student's calibration against the teacher's labels (``calibration``), the truth
    (``calibration_vs_truth``) and the designated teacher's own probability
    (``calibration_vs_teacher_p``), the teacher's own calibration against the truth
    (``teacher_calibration_vs_truth``), and their ECE / Brier as flat keys (``ece``, ``brier_vs_truth``,
    ``teacher_ece_vs_truth``, ...). A block is None where its reference or probabilities are absent."""
    truth = list(df["truth"]) if "truth" in df else [None] * len(df)
    teacher_p = list(df[TEACHER_P_COLUMN]) if TEACHER_P_COLUMN in df else [None] * len(df)
    blocks = {
        "calibration": reliability(p_out, list(df["label"]), bins),
        "calibration_vs_truth": reliability(p_out, truth, bins),
        "calibration_vs_teacher_p": reliability(p_out, teacher_p, bins),
        "teacher_calibration_vs_truth": reliability(teacher_p, truth, bins),
    }
    flat: dict[str, Any] = {}
    for name, block in blocks.items():
        prefix = "teacher_" if name.startswith("teacher_") else ""
        suffix = name.split("calibration", 1)[1]
        for key in ("ece", "brier"):
            flat[f"{prefix}{key}{suffix}"] = block[key] if block else None
    return {**flat, **blocks}


def probe_keys(block: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The linear probe's headline keys (``probe_balanced_accuracy_vs_truth``, ...) from its block
    (:func:`scenefit.evaluate.probe.probe_criterion`); all None without one."""
    ok = block is not None and block.get("available")
    return {**_headline_keys(block["vs_teacher"] if ok else None, "probe_"),
            **_headline_keys(block["vs_truth"] if ok else None, "probe_", "_vs_truth")}


def criterion_metrics(
    name: str, df: pd.DataFrame, student: Sequence[Answer], baseline: Optional[Sequence[Answer]],
    cfg: EvaluateConfig, probe: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """All numbers of one criterion: headline keys first, full blocks below."""
    teacher = list(df["label"])
    truth = list(df["truth"]) if "truth" in df else [None] * len(df)
    m = _headline(Criterion.parse(name).display, teacher, truth, _labels(student),
                  _labels(baseline) if baseline is not None else None)
    m.update(probe_keys(probe))
    m["probe"] = {k: v for k, v in probe.items() if k != "labels"} if probe else None
    m["reasoning"] = reasoning_metrics(_labels(student), [a.analysis for a in student], teacher,
                                       list(df["analysis"]) if "analysis" in df else [None] * len(df))
    m.update(calibration_blocks([a.p_out for a in student], df, cfg.calibration_bins))
    objects = list(df["object"]) if "object" in df else [None] * len(df)
    scenes = list(df["scene"]) if "scene" in df else [None] * len(df)
    m["errors_by_object"] = error_breakdown(objects, teacher, _labels(student), cfg.top_confusions)
    m["errors_by_scene"] = error_breakdown(scenes, teacher, _labels(student), cfg.top_confusions)
    m["top_confusions"] = top_confusions(objects, teacher, _labels(student), cfg.top_confusions)
    m["parse_status"] = pd.Series([a.status for a in student], dtype=object).value_counts().to_dict()
    m["decision"] = decision_block(teacher, student)
    return m


def decision_block(teacher: Sequence[Any], student: Sequence[Answer]) -> dict[str, Any]:
    """Which decision the criterion's numbers score — ``generated_text`` (explanations were
    generated, or a reasoning-first student) or ``logits`` (the fast path) — and, where the other
    exists too (explained decision-first students), its balanced accuracy vs the teacher and the
    share of answers on which the two agree (an unreadable text counts as a disagreement)."""
    scored = "generated_text" if any(a.raw is not None for a in student) else "logits"
    out: dict[str, Any] = {"scored": scored, "other": None}
    fast = [a.fast_label for a in student]
    if scored == "generated_text" and student and all(f is not None for f in fast):
        other = label_metrics(teacher, fast)
        out["other"] = {"decision": "logits", "balanced_accuracy": other.get("balanced_accuracy"),
                        "accuracy": other.get("accuracy"),
                        "agreement": sum(a.label is a.fast_label for a in student) / len(student)}
    return out


def fused_metrics(
    frames: dict[str, pd.DataFrame], student: dict[str, list[Answer]], baseline: Optional[dict[str, list[Answer]]],
    probes: Optional[dict[str, dict[str, Any]]] = None,
) -> Optional[dict[str, Any]]:
    """Fused decision over the ids every criterion's split holds, vs the teacher's final decision
    (``final``) and, where all three truths are known, the fused truth. None unless all criteria ran."""
    if set(frames) != {c.value for c in Criterion}:
        return None

    def by_id(answers: dict[str, list[Answer]]) -> dict[str, Optional[Label]]:
        return fuse_by_id({c: {a.id: a.label for a in answers[c]} for c in frames})

    fused_student = by_id(student)
    ids = list(fused_student)
    rows = {c: df.set_index(df["id"].astype(str)) for c, df in frames.items()}
    first = rows[next(iter(rows))]
    final = [first.at[i, "final"] if "final" in first else None for i in ids]
    truth = fuse_by_id({c: {i: rows[c].at[i, "truth"] if "truth" in rows[c] else None for i in ids} for c in rows})
    fused_truth = [truth.get(i) for i in ids]
    fb = by_id(baseline) if baseline is not None else None
    m = _headline("Fused", final, fused_truth, [fused_student[i] for i in ids],
                  [fb[i] for i in ids] if fb is not None else None)
    m["ids"] = len(ids)
    if probes and all((probes.get(c) or {}).get("available") for c in frames):
        fp = fuse_by_id({c: dict(zip(df["id"].astype(str), probes[c]["labels"])) for c, df in frames.items()})
        block = {"available": True, "vs_teacher": label_metrics(final, [fp.get(i) for i in ids]),
                 "vs_truth": label_metrics(fused_truth, [fp.get(i) for i in ids]) if _truth_known(fused_truth) else None}
        m.update(probe_keys(block))
    objects = [first.at[i, "object"] if "object" in first else None for i in ids]
    scenes = [first.at[i, "scene"] if "scene" in first else None for i in ids]
    pred = [fused_student[i] for i in ids]
    m["errors_by_object"] = error_breakdown(objects, final, pred)
    m["errors_by_scene"] = error_breakdown(scenes, final, pred)
    return m


def worst_errors(frames: dict[str, pd.DataFrame], student: dict[str, list[Answer]], size: int) -> list[dict[str, Any]]:
    """Student answers that disagree with the teacher, most confident first (unparseable last)."""
    rows = []
    for name, df in frames.items():
        for rec, ans in zip(df.to_dict("records"), student[name]):
            teacher = as_label(rec.get("label"))
            if ans.label is teacher:
                continue
            conf = None
            if ans.p_out is not None and ans.label is not None:
                conf = ans.p_out if ans.label is Label.OUT else 1.0 - ans.p_out
            rows.append({
                "criterion": name, "id": str(rec["id"]), "image": rec.get("image"), "box": clean_cell(rec.get("box")),
                "object": rec.get("object"), "scene": clean_cell(rec.get("scene")),
                "student_label": ans.label.value if ans.label else None, "student_analysis": ans.analysis,
                "student_raw": ans.raw, "confidence": conf,
                "teacher_label": rec.get("label"), "teacher_analysis": rec.get("analysis"),
                "truth": clean_cell(rec.get("truth")),
            })
    rows.sort(key=lambda r: (r["student_label"] is None, -(r["confidence"] if r["confidence"] is not None else -1.0),
                             r["criterion"], r["id"]))
    return rows[:size]


def evaluate_answers(
    frames: dict[str, pd.DataFrame], student: dict[str, list[Answer]], baseline: Optional[dict[str, list[Answer]]],
    cfg: EvaluateConfig, shortcut_answers: Optional[dict[str, list[Answer]]] = None, shortcut_source: str = "",
    info: Optional[dict[str, Any]] = None, probes: Optional[dict[str, dict[str, Any]]] = None,
) -> dict[str, Any]:
    """The metrics dict of ``metrics.json`` from answers already collected (same order as the
    frames' rows); ``probes`` holds each criterion's linear-probe block (its labels in row order)."""
    for name, df in frames.items():
        if len(student[name]) != len(df) or (baseline is not None and len(baseline[name]) != len(df)):
            raise EvaluateError(f"{name}: {len(df)} rows but a different number of answers")
    synthetic = is_synthetic(*frames.values())
    metrics: dict[str, Any] = {
        "synthetic": synthetic, **({"notice": SYNTHETIC_NOTICE} if synthetic else {}),
        "split": cfg.split, "criteria": list(frames), **(info or {}),
        "conventions": CONVENTIONS,
        "reasoning_rule": RULE_SUMMARY,
    }
    for name, df in frames.items():
        metrics[name] = criterion_metrics(name, df, student[name], baseline[name] if baseline else None, cfg,
                                          (probes or {}).get(name))
    fused = fused_metrics(frames, student, baseline, probes)
    if fused is not None:
        metrics["fused"] = fused
    if shortcut_answers is not None:
        metrics["shortcut"] = shortcut_metrics({c: _labels(a) for c, a in shortcut_answers.items()},
                                               [a.id for a in next(iter(shortcut_answers.values()))],
                                               cfg.shortcut_threshold, shortcut_source,
                                               recall=split_recall(metrics), min_recall=cfg.shortcut_min_recall)
    else:
        metrics["shortcut"] = {"available": False, "reason": "no unmodified images given (--originals)",
                               "threshold": cfg.shortcut_threshold, "in_context_share": {}}
    return metrics


def split_recall(metrics: dict[str, Any]) -> dict[str, Any]:
    """Each criterion's (and the fused decision's) out-of-context recall on the evaluated split, vs
    the truth where known, else vs the teacher's labels: the other half of the shortcut test (a
    student that answers In to everything is 100 % in-context on unmodified images)."""
    out: dict[str, Any] = {"reference": {}, "recall_out": {}}
    for name in [*metrics.get("criteria", []), "fused"]:
        m = metrics.get(name)
        if not m:
            continue
        ref = "truth" if m.get("vs_truth") else "teacher"
        block = m["vs_truth"]["student"] if ref == "truth" else m["student"]
        out["recall_out"][name], out["reference"][name] = block.get("recall_out"), ref
    return out


# ---------------------------------------------------------------- end to end

def default_originals(data_dir: Path | str) -> Optional[Path]:
    """The synthetic world's originals beside the datasets (the demo's layout: DIR/world/originals)."""
    cand = Path(data_dir).resolve().parent / "world" / "originals" / "manifest.parquet"
    return cand if cand.is_file() else None


def answers_table(answers: dict[str, list[Answer]], model: str) -> pd.DataFrame:
    rows = [{"model": model, "criterion": c, "id": a.id, "label": a.label.value if a.label else None, "p_out": a.p_out,
             "analysis": a.analysis, "raw": a.raw, "status": a.status} for c, lst in answers.items() for a in lst]
    return pd.DataFrame(rows, columns=["model", "criterion", "id", "label", "p_out", "analysis", "raw", "status"])


def evaluate_dirs(
    students_dir: Path | str, data_dir: Path | str, out_dir: Path | str, cfg: EvaluateConfig,
    student_predictor: Any = None, baseline_predictor: Any = None, progress: Optional[Progress] = None,
) -> tuple[dict[str, Any], Path, Path]:
    """Evaluate students on DATA/<criterion>/<split>.parquet; write OUT/metrics.json,
    OUT/report.html, OUT/answers.parquet (every answer) and OUT/errors.jsonl (failed samples).

    Predictors are built from ``students_dir`` unless given (tests pass stubs).
    ``progress`` gets one bar per criterion and model, and one for the shortcut test.
    """
    from scenefit.core.parquet_io import write_table
    from scenefit.evaluate.report import thumbnail_data_url, write_report

    frames = load_split(data_dir, cfg.criteria, cfg.split, cfg.limit)
    if student_predictor is None:
        student_predictor, baseline_predictor = build_predictors(students_dir, cfg)
    originals_path = cfg.originals or default_originals(data_dir)
    from scenefit.data.manifest import read_manifest

    originals, originals_errors = (read_manifest(originals_path) if originals_path else ([], []))
    originals, originals_selection = originals_in_split(
        originals, (g for df in frames.values() if "group" in df for g in df["group"].unique()))
    originals = originals[: cfg.originals_limit] if cfg.originals_limit else originals  # the limit after the choice

    def bar(desc: str, total: int) -> Optional[Progress]:
        return progress.bar(desc, total) if progress else None

    failures: list[dict] = [{**e, "stage": "originals"} for e in originals_errors]

    def run(predictor: Any, tag: str, explain: bool) -> dict[str, list[Answer]]:
        out: dict[str, list[Answer]] = {}
        for name, df in frames.items():
            samples = [row_sample(r) for r in df.to_dict("records")]
            got, errs = collect_answers(predictor, samples, [name], explain, chunk=cfg.predict.batch_size * 2,
                                        progress=bar(f"{tag} · {name}", len(samples)))
            failures.extend({**e, "stage": f"{tag}/{name}"} for e in errs)
            failed = {e["id"] for e in errs}
            # a sample the model could not be run on is an input error, not a model error: left out
            if failed:
                frames[name] = df[~df["id"].astype(str).isin(failed)].reset_index(drop=True)
            out[name] = got[name]
        return out

    student = run(student_predictor, "student", cfg.explain)
    baseline_explain = cfg.explain if cfg.baseline_explain is None else cfg.baseline_explain
    baseline = (run(baseline_predictor, "baseline", baseline_explain)
                if baseline_predictor is not None and cfg.baseline else None)
    if baseline is not None:  # rows dropped during the baseline run leave the student's answers too
        for name, df in frames.items():
            keep = set(df["id"].astype(str))
            student[name] = [a for a in student[name] if a.id in keep]
    shortcut = None
    if originals:
        shortcut, errs = collect_answers(student_predictor, originals, list(frames), cfg.shortcut_explain,
                                         chunk=cfg.predict.batch_size * 2, progress=bar("shortcut test", len(originals)),
                                         box_width=cfg.shortcut_box_width)
        failures.extend({**e, "stage": "shortcut"} for e in errs)
    probes = None
    base_model = getattr(student_predictor, "base", None) or cfg.predict.base
    if cfg.probe:
        from scenefit.evaluate.probe import run_probes

        probes = run_probes(base_model, data_dir, frames, cfg, bar)
    info = {"students": str(students_dir), "data": str(data_dir), "originals": str(originals_path) if originals else None,
            "base_model": base_model, "failed": len(failures),
            # reasoning-first students are read from generated text whatever `explain` says
            "answer_formats": {c.value: f.value for c, f in getattr(student_predictor, "answer_formats", {}).items()},
            "explain": {"student": cfg.explain, "baseline": baseline_explain if baseline is not None else None,
                        "shortcut": cfg.shortcut_explain if originals else None}}
    metrics = evaluate_answers(frames, student, baseline, cfg, shortcut, str(originals_path or ""), info, probes)
    if originals_path:
        metrics["shortcut"]["selection"] = originals_selection
    gallery = worst_errors(frames, student, cfg.gallery_size)
    for g in gallery:
        try:
            g["thumbnail"] = thumbnail_data_url(g["image"], g["box"], True, cfg.thumbnail_px)
        except Exception as e:  # noqa: BLE001 — a missing thumbnail must not lose the report
            g["image_error"] = f"{type(e).__name__}: {e}"
        g["image"] = stored_image_name(g["image"])  # the report names an embedded image, never carries its bytes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = [answers_table(student, "student")] + ([answers_table(baseline, "baseline")] if baseline else [])
    if shortcut:
        tables.append(answers_table(shortcut, "shortcut"))
    write_table(pd.concat(tables, ignore_index=True), out / "answers.parquet",
                {"notice": SYNTHETIC_NOTICE} if metrics["synthetic"] else {})
    write_jsonl(failures, out / "errors.jsonl")
    json_path, html_path = write_report(metrics, out, gallery)
    return metrics, json_path, html_path


def build_predictors(students_dir: Path | str, cfg: EvaluateConfig) -> tuple[Any, Any]:
    """The students' predictor (one base + one adapter per criterion) and, when
    ``cfg.baseline``, the same model with its adapters switched off."""
    from scenefit.predict import Predictor

    pcfg = cfg.predict.model_copy(update={"criteria": cfg.criteria, "explain": cfg.explain})
    student = Predictor.from_students(students_dir, base=pcfg.base, config=pcfg)
    return student, (BaseOnly(student) if cfg.baseline else None)
