"""Consensus between teachers: keep the samples they agree on, and report how well they agree.

    scenefit consensus --db runs/demo/annotate/annotations.sqlite \
        --manifest runs/demo/ingest/manifest.parquet --out runs/demo/consensus --config demo

Input: one row per (sample, teacher) answer, as ``AnnotationStore.to_frame()`` returns it
(``sample_id, teacher, prompt_hash, status, final, label_<criterion>, analysis_<criterion>`` …),
plus the normalised manifest. Everything is vectorised over a (samples × teachers) matrix of
label codes (0 = In-context, 1 = Out-of-context, -1 = none), so 100,000 samples take well
under a second.

Rules (``ConsensusConfig.rule``):

- ``unanimous_final``: every selected teacher gave a usable answer with a final decision, and
  all final decisions are the same.
- ``unanimous_all``: as above for the final decision *and* each of the three criteria.
- ``designated``: the designated teacher's labels, on samples where it gave a usable final
  decision and every other selected teacher answered at all (a response came back, even an
  unreadable one — a request failure is not an answer).
- ``designated_criteria``: the designated teacher's labels criterion by criterion — what the
  authors' dataset notebooks do (their Molmo/InternVL agreement filters are commented out; the
  label is Qwen2.5-VL-72B's alone): a sample is kept when every selected teacher answered and the
  designated teacher gave a label for at least one criterion, with or without a final decision;
  each criterion's dataset then takes the samples that carry its label.
- ``majority``: the label given by more than half of the selected teachers (a missing or
  unusable answer is a vote for neither); ties and samples without such a label are dropped.

A final decision the parser derived from the three criteria (the teacher wrote none; its
``reason`` says so) is not that teacher's vote on the final decision unless
``count_derived_final``: a teacher that never stated a verdict does not make a consensus
unanimous. Its criterion labels still count.

A usable answer has status ``ok`` or ``partial`` (its missing criteria count as missing), or
``contradiction`` when ``contradiction_usable`` (default: its labels are taken as written).
Per-criterion consensus labels follow the same rule as the final decision, criterion by
criterion (under ``unanimous_final`` a criterion the teachers split on stays empty and the
dataset builder falls back to the designated teacher's label).

Soft labels: when the store holds the teachers' probabilities (the ``p_out`` column), each kept
sample carries, per criterion and for the final decision, ``designated_p_out_<field>`` (the
designated teacher's P(Out-of-context)) and ``teachers_mean_p_out_<field>`` (the mean over the
selected teachers whose usable answer gave one) — null where no teacher gave one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import numpy as np
import pandas as pd
from pydantic import Field

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, Label
from scenefit.core.records import is_synthetic
from scenefit.data.agreement import MISSING, agreement_rate, fleiss_from_codes, pairwise_cohen
from scenefit.data.consensus_soft import mean_p_out, p_out_table
from scenefit.teachers.parse import final_was_derived

RULES = ("unanimous_final", "unanimous_all", "designated", "designated_criteria", "majority")
Rule = Literal[RULES]

#: The label fields compared between teachers: the three criteria, then the final decision.
FIELDS: tuple[str, ...] = tuple(c.value for c in CRITERIA) + ("final",)

#: Statuses of an answer that came back (whatever the parser made of it).
ANSWER_STATUSES = frozenset({"ok", "partial", "contradiction", "unparseable", "empty"})
PARSE_FAILURES = frozenset({"unparseable", "empty"})

ANSWER_COLUMNS = ["sample_id", "teacher", "prompt_hash", "status", "final"] + [
    f"{kind}_{c.value}" for kind in ("label", "analysis") for c in CRITERIA
]

_CODE_OF = {Label.IN.value: 0, Label.OUT.value: 1}
_LABEL_OF_CODE = np.array([None, Label.IN.value, Label.OUT.value], dtype=object)  # index: code + 1


class ConsensusConfig(StageConfig):
    """Section ``consensus``: which teachers count and how they must agree."""

    rule: Rule = Field(
        default="unanimous_final",
        description="Consensus rule applied to the output: unanimous_final (all final decisions agree), "
        "unanimous_all (every criterion too), designated (that teacher's labels; its final decision needed, the "
        "others must have answered), designated_criteria (that teacher's labels criterion by criterion, no final "
        "decision needed, the others must have answered: the authors' code) or majority (more than half of the "
        "teachers; ties dropped). All are computed for the report.",
    )
    teachers: Optional[list[str]] = Field(
        default=None, description="Teacher names whose answers count (default: every teacher in the store)."
    )
    designated: Optional[str] = Field(
        default=None,
        description="Designated teacher: its analysis sentences go into the student targets and the 'designated' "
        "rule uses its labels (default: the first teacher listed, else the first by name).",
    )
    prompt_hash: Optional[str] = Field(
        default=None,
        description="Use the answers to this teacher prompt hash (required when the store holds several).",
    )
    contradiction_usable: bool = Field(
        default=True,
        description="Count answers whose final decision contradicts their own criteria (status 'contradiction') "
        "as usable, with their labels as written.",
    )
    count_derived_final: bool = Field(
        default=False,
        description="Count a final decision the parser derived from the three criteria (the teacher wrote none) "
        "as that teacher's final vote; by default it is no vote, so it never makes a final decision unanimous.",
    )


# --------------------------------------------------------------------------- answer matrix


@dataclass
class AnswerMatrix:
    """Teacher answers aligned on one sample order: rows = samples, columns = teachers."""

    sample_ids: np.ndarray  # (n,) str
    teachers: list[str]
    designated: int  # column of the designated teacher
    codes: dict[str, np.ndarray]  # field -> (n, t) int8; -1 = no label or unusable answer
    status: np.ndarray  # (n, t) object; None = no row for this (sample, teacher)
    usable: np.ndarray  # (n, t) bool
    answered: np.ndarray  # (n, t) bool: a response came back (any parse status), not a request failure
    analysis: dict[str, np.ndarray]  # criterion -> (n,) object, the designated teacher's sentences
    unmatched: int  # answer rows (of the selected teachers) naming samples outside sample_ids
    derived_final: np.ndarray  # (n, t) bool: the parser derived this final decision
    p_out: dict[str, np.ndarray] = None  # field -> (n, t) float; NaN = no probability (or unusable answer)


def label_codes(values: pd.Series) -> np.ndarray:
    """Label strings (loosely written ones too) → int8 codes; anything unreadable → -1."""
    values = pd.Series(values)
    is_in = (values == Label.IN.value).fillna(False).to_numpy(dtype=bool)
    is_out = (values == Label.OUT.value).fillna(False).to_numpy(dtype=bool)
    codes = np.full(len(values), MISSING, dtype=np.int8)
    codes[is_in], codes[is_out] = 0, 1
    odd = ~(is_in | is_out) & values.notna().to_numpy(dtype=bool)
    if odd.any():  # rare: text other than the canonical label strings
        rest = values[odd].astype(str)
        parsed = {v: Label.parse(v) for v in rest.unique()}
        codes[odd] = [_CODE_OF[parsed[v].value] if parsed[v] else MISSING for v in rest]
    return codes


def positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Position of each value in ``keys`` (-1 when absent): one hash join in Arrow's C++ kernel."""
    import pyarrow as pa
    import pyarrow.compute as pc

    found = pc.index_in(pa.array(values.astype(str)), value_set=pa.array(keys.astype(str)))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def label_strings(codes: np.ndarray) -> np.ndarray:
    return _LABEL_OF_CODE[codes.astype(np.int64) + 1]


def select_prompt(answers: pd.DataFrame, prompt_hash: Optional[str]) -> pd.DataFrame:
    """Keep one prompt's answers; several prompts without a choice is an error naming them."""
    hashes = answers["prompt_hash"].value_counts()
    if prompt_hash is not None:
        if prompt_hash not in hashes.index:
            raise ValueError(f"no answers for prompt hash {prompt_hash!r}; the store has: {dict(hashes)}")
        return answers[answers["prompt_hash"] == prompt_hash]
    if len(hashes) > 1:
        raise ValueError(
            f"the answers come from {len(hashes)} different prompts {dict(hashes)}; "
            "choose one with consensus.prompt_hash (--prompt-hash)"
        )
    return answers


def resolve_teachers(answers: pd.DataFrame, teachers: Optional[Sequence[str]], designated: Optional[str]) -> tuple[list[str], str]:
    known = sorted(answers["teacher"].astype(str).unique())
    chosen = list(teachers) if teachers else known
    missing = [t for t in chosen if t not in known]
    if missing:
        raise ValueError(f"teacher(s) {missing} have no answers; teachers in the store: {known}")
    if not chosen:
        raise ValueError("no teacher answers to build a consensus from")
    d = designated or chosen[0]
    if d not in chosen:
        raise ValueError(f"designated teacher {d!r} is not among the selected teachers {chosen}")
    return chosen, d


def answer_matrix(
    answers: pd.DataFrame,
    sample_ids: Sequence[str],
    teachers: Sequence[str],
    designated: str,
    contradiction_usable: bool = True,
    count_derived_final: bool = False,
) -> AnswerMatrix:
    """Align answers on ``sample_ids`` × ``teachers``; rows of other samples/teachers are ignored.

    A derived final decision (told by the ``reason`` column, when there is one) becomes no
    final vote unless ``count_derived_final``."""
    absent = [c for c in ANSWER_COLUMNS if c not in answers.columns]
    if absent:
        raise ValueError(f"answer table lacks column(s) {absent}")
    ids = (sample_ids if isinstance(sample_ids, pd.Series) else pd.Series(list(sample_ids), dtype=object)).astype(str)
    ids = ids.reset_index(drop=True)
    teachers = list(teachers)
    a = answers[answers["teacher"].isin(teachers)]
    rows = positions(a["sample_id"], ids)
    cols = positions(a["teacher"], pd.Series(teachers))
    on = rows >= 0
    unmatched = int((~on).sum())
    a, rows, cols = a[on], rows[on], cols[on]
    n, t = len(ids), len(teachers)
    seen = np.bincount(rows * t + cols, minlength=n * t)
    if (seen > 1).any():
        flat = int(np.flatnonzero(seen > 1)[0])
        raise ValueError(
            f"{int((seen > 1).sum())} (sample, teacher) pairs have several answer rows, e.g. "
            f"({ids.iloc[flat // t]!r}, {teachers[flat % t]!r}); select one prompt hash"
        )

    status_col = a["status"]
    status = np.full((n, t), None, dtype=object)
    status[rows, cols] = status_col.to_numpy(dtype=object)
    usable_statuses = ["ok", "partial"] + (["contradiction"] if contradiction_usable else [])
    usable = np.zeros((n, t), dtype=bool)
    usable[rows, cols] = status_col.isin(usable_statuses).to_numpy(dtype=bool)
    answered = np.zeros((n, t), dtype=bool)
    answered[rows, cols] = status_col.isin(sorted(ANSWER_STATUSES)).to_numpy(dtype=bool)

    derived = np.zeros((n, t), dtype=bool)
    if "reason" in a.columns:
        derived[rows, cols] = a["reason"].map(final_was_derived).to_numpy(dtype=bool)
    codes: dict[str, np.ndarray] = {}
    for field in FIELDS:
        m = np.full((n, t), MISSING, dtype=np.int8)
        m[rows, cols] = label_codes(a["final" if field == "final" else f"label_{field}"])
        m[~usable] = MISSING
        if field == "final" and not count_derived_final:
            m[derived] = MISSING
        codes[field] = m

    p_out = {}
    cells = a["p_out"].to_numpy(dtype=object) if "p_out" in a.columns else np.full(len(a), None, dtype=object)
    values = p_out_table(cells, FIELDS)
    for k, field in enumerate(FIELDS):
        m = np.full((n, t), np.nan)
        m[rows, cols] = values[:, k]
        m[~usable] = np.nan
        p_out[field] = m

    d = teachers.index(designated)
    mine = cols == d
    analysis = {}
    for c in CRITERIA:
        col = np.full(n, None, dtype=object)
        col[rows[mine]] = a.loc[mine, f"analysis_{c.value}"].to_numpy(dtype=object)
        col[~usable[:, d]] = None
        analysis[c.value] = col
    return AnswerMatrix(ids.to_numpy(dtype=object), teachers, d, codes, status, usable, answered, analysis, unmatched,
                        derived, p_out)


# --------------------------------------------------------------------------- rules


def unanimous_codes(m: np.ndarray) -> np.ndarray:
    """Per sample: the label every teacher gave, else -1 (a missing label breaks unanimity)."""
    if m.shape[1] == 0:
        return np.full(len(m), MISSING, np.int8)
    agree = (m != MISSING).all(axis=1) & (m == m[:, :1]).all(axis=1)
    return np.where(agree, m[:, 0], MISSING).astype(np.int8)


def majority_codes(m: np.ndarray) -> np.ndarray:
    """Per sample: the label more than half of all teachers gave, else -1 (ties included)."""
    need = m.shape[1] // 2 + 1
    out_votes = (m == 1).sum(axis=1)
    in_votes = (m == 0).sum(axis=1)
    return np.where(out_votes >= need, 1, np.where(in_votes >= need, 0, MISSING)).astype(np.int8)


def apply_rule(matrix: AnswerMatrix, rule: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(kept mask, consensus codes per field) for one rule."""
    if rule in ("unanimous_final", "unanimous_all"):
        labels = {f: unanimous_codes(matrix.codes[f]) for f in FIELDS}
        if rule == "unanimous_final":
            keep = labels["final"] != MISSING
        else:
            keep = np.logical_and.reduce([labels[f] != MISSING for f in FIELDS])
    elif rule == "majority":
        labels = {f: majority_codes(matrix.codes[f]) for f in FIELDS}
        keep = labels["final"] != MISSING
    elif rule in ("designated", "designated_criteria"):
        labels = {f: matrix.codes[f][:, matrix.designated].copy() for f in FIELDS}
        if rule == "designated":
            labelled = labels["final"] != MISSING
        else:  # any criterion labelled (codes are -1 missing, 0 in, 1 out)
            labelled = np.stack([labels[c.value] for c in CRITERIA]).max(axis=0) != MISSING
        keep = labelled & matrix.answered.all(axis=1)
    else:
        raise ValueError(f"unknown consensus rule {rule!r}; expected one of {', '.join(RULES)}")
    return keep, labels


# --------------------------------------------------------------------------- report pieces


def truth_codes(manifest: pd.DataFrame) -> Optional[dict[str, np.ndarray]]:
    """Truth per field (final = fused: out if any criterion is out, in if all are in); None without truth."""
    cols = [f"truth_{c.value}" for c in CRITERIA]
    if not all(c in manifest.columns for c in cols) or manifest[cols].isna().all().all():
        return None
    out = {c.value: label_codes(manifest[f"truth_{c.value}"]) for c in CRITERIA}
    stack = np.stack([out[c.value] for c in CRITERIA], axis=1)
    out["final"] = np.where(
        (stack == 1).any(axis=1), 1, np.where((stack == 0).all(axis=1), 0, MISSING)
    ).astype(np.int8)
    return out


def accuracy(pred: np.ndarray, truth: np.ndarray, within: np.ndarray) -> dict:
    """Accuracy on samples (in ``within``) that have both a label and a truth; coverage = labelled share."""
    has_truth = within & (truth != MISSING)
    scored = has_truth & (pred != MISSING)
    n = int(scored.sum())
    correct = int((pred[scored] == truth[scored]).sum())
    return {
        "accuracy": correct / n if n else None,
        "n": n,
        "coverage": n / int(has_truth.sum()) if has_truth.any() else None,
    }


def teacher_status(matrix: AnswerMatrix) -> dict[str, dict]:
    out = {}
    for j, t in enumerate(matrix.teachers):
        s = pd.Series(matrix.status[:, j]).fillna("missing")
        counts = {str(k): int(v) for k, v in s.value_counts().sort_index().items()}
        out[t] = {
            "answers": int(matrix.answered[:, j].sum()),
            "usable": int(matrix.usable[:, j].sum()),
            "parse_failures": int(sum(counts.get(k, 0) for k in PARSE_FAILURES)),
            "request_failures": int(sum(v for k, v in counts.items() if k not in ANSWER_STATUSES | {"missing"})),
            "missing": counts.get("missing", 0),
            "derived_final": int(matrix.derived_final[:, j].sum()),
            "with_p_out": int((~np.isnan(matrix.p_out["final"][:, j])).sum()) if matrix.p_out else 0,
            "status": counts,
        }
    return out


def agreement_report(matrix: AnswerMatrix) -> dict[str, dict]:
    out = {}
    for f in FIELDS:
        rate, n = agreement_rate(matrix.codes[f])
        fk, fn = fleiss_from_codes(matrix.codes[f])
        out[f] = {
            "rate": rate,
            "n": n,
            "fleiss_kappa": fk,
            "fleiss_n": fn,
            "cohen": pairwise_cohen(matrix.codes[f], matrix.teachers),
        }
    return out


# --------------------------------------------------------------------------- the stage


@dataclass
class ConsensusResult:
    frame: pd.DataFrame  # one row per kept sample (see OUTPUT_COLUMNS)
    report: dict
    meta: dict  # provenance stored in the Parquet file


def output_columns() -> list[str]:
    crit = [c.value for c in CRITERIA]
    return (
        ["id", "image", "object", "box", "group", "scene", "boxed", "synthetic"]
        + [f"label_{c}" for c in crit]
        + ["final"]
        + [f"analysis_{c}" for c in crit]
        + [f"designated_{c}" for c in crit]
        + ["designated_final", "n_usable"]
        + [f"truth_{c}" for c in crit]
        + [f"designated_p_out_{f}" for f in FIELDS]
        + [f"teachers_mean_p_out_{f}" for f in FIELDS]
    )


def _resolve_images(images: pd.Series, root: Optional[Path]) -> pd.Series:
    if root is None:
        return images.astype(str)
    base = Path(root).resolve()
    return images.astype(str).map(lambda p: p if Path(p).is_absolute() else str(base / p))


def compare_rules(matrix: AnswerMatrix, truth: Optional[dict], chosen: str) -> tuple[tuple, dict, dict]:
    """Every rule of :data:`RULES` applied to ``matrix``: the chosen rule's (keep mask, labels),
    what each rule keeps (counts by class, share), and with ``truth`` each rule's accuracy on
    what it keeps."""
    per_rule, after = {}, {}
    applied = None
    for rule in RULES:
        keep, labels = apply_rule(matrix, rule)
        final = labels["final"][keep]
        per_rule[rule] = {
            "kept": int(keep.sum()),
            "in_context": int((final == 0).sum()),
            "out_of_context": int((final == 1).sum()),
            "share": float(keep.mean()) if len(keep) else None,
        }
        if truth is not None:
            after[rule] = {f: accuracy(labels[f], truth[f], keep) for f in FIELDS}
        if rule == chosen:
            applied = (keep, labels)
    return applied, per_rule, after


def build_consensus(
    answers: pd.DataFrame,
    manifest: pd.DataFrame,
    cfg: ConsensusConfig,
    image_root: Optional[Path] = None,
    box_style: Optional[dict] = None,
) -> ConsensusResult:
    """Apply ``cfg.rule`` and compute the agreement report (every rule, for comparison).

    ``box_style``: how the manifest's boxes were drawn (its provenance's ``box_style``), carried on
    to split, datasets and the students.

    ``image_root``: folder that relative image paths in the manifest are relative to (the frame
    carries them absolute; :func:`scenefit.core.parquet_io.write_table` stores them relative to the
    output folder again, so the run folder stays portable).
    """
    if manifest["id"].duplicated().any():
        dup = manifest.loc[manifest["id"].duplicated(), "id"].iloc[0]
        raise ValueError(f"manifest repeats sample id {dup!r}")
    answers = select_prompt(answers, cfg.prompt_hash)
    teachers, designated = resolve_teachers(answers, cfg.teachers, cfg.designated)
    manifest = manifest.reset_index(drop=True)
    manifest_ids = manifest["id"].astype(str)
    matrix = answer_matrix(answers, manifest_ids, teachers, designated, cfg.contradiction_usable, cfg.count_derived_final)

    not_in_manifest = matrix.unmatched
    synthetic = is_synthetic(manifest)
    truth = truth_codes(manifest)
    everyone = np.ones(len(manifest), dtype=bool)

    (keep, labels), per_rule, after = compare_rules(matrix, truth, cfg.rule)

    d = matrix.designated
    kept = manifest.loc[keep].copy()
    kept["image"] = _resolve_images(kept["image"], image_root)
    for f in FIELDS:
        name = "final" if f == "final" else f"label_{f}"
        kept[name] = label_strings(labels[f][keep])
        kept[f"designated_{f}"] = label_strings(matrix.codes[f][keep, d])
    for c in CRITERIA:
        kept[f"analysis_{c.value}"] = matrix.analysis[c.value][keep]
    kept["n_usable"] = matrix.usable[keep].sum(axis=1).astype(np.int64)
    for f in FIELDS:  # soft labels: NaN (null in Parquet) where no teacher gave a probability
        kept[f"designated_p_out_{f}"] = matrix.p_out[f][keep, d]
        kept[f"teachers_mean_p_out_{f}"] = mean_p_out(matrix.p_out[f][keep])
    for col in ("group", "scene", *(f"truth_{c.value}" for c in CRITERIA)):
        if col not in kept:
            kept[col] = None
    for col, default in (("boxed", False), ("synthetic", False)):
        kept[col] = kept[col].fillna(default).astype(bool) if col in kept else default
    frame = kept[output_columns()].reset_index(drop=True)

    report = {
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
        "rule": cfg.rule,
        "teachers": teachers,
        "designated": designated,
        "prompt_hash": str(answers["prompt_hash"].iloc[0]) if len(answers) else cfg.prompt_hash,
        "contradiction_usable": cfg.contradiction_usable,
        "count_derived_final": cfg.count_derived_final,
        "samples": {
            "manifest": int(len(manifest)),
            "answered_by_any": int(matrix.answered.any(axis=1).sum()),
            "answered_by_all": int(matrix.answered.all(axis=1).sum()),
            "answers_not_in_manifest": not_in_manifest,
            "kept": int(keep.sum()),
        },
        "kept_per_rule": per_rule,
        "agreement": agreement_report(matrix),
        "teacher_status": teacher_status(matrix),
        "accuracy": None
        if truth is None
        else {
            "before": {"teacher": designated, **{f: accuracy(matrix.codes[f][:, d], truth[f], everyone) for f in FIELDS}},
            "after": after,
        },
    }
    meta = {
        "stage": "consensus",
        "rule": cfg.rule,
        "teachers": teachers,
        "designated": designated,
        "prompt_hash": report["prompt_hash"],
        "synthetic": synthetic,
        "notice": report["notice"],
        "box_style": box_style,
    }
    return ConsensusResult(frame, report, meta)


def write_consensus(result: ConsensusResult, out_dir: Path | str, inputs: Optional[dict] = None) -> dict[str, Path]:
    """OUT/consensus.parquet and OUT/report.json (``inputs``: name -> file hash, for provenance)."""
    from scenefit.core.files import write_json
    from scenefit.core.parquet_io import write_table

    out = Path(out_dir)
    meta = {**result.meta, "inputs": inputs or {}}
    return {
        "consensus": write_table(result.frame, out / "consensus.parquet", meta),
        "report": write_json({**result.report, "inputs": inputs or {}}, out / "report.json"),
    }
