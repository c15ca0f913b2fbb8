"""Per-criterion student datasets (chat-format SFT rows) from the balanced splits.

    scenefit datasets runs/demo/split --out runs/demo/datasets --config demo

For each criterion, OUT/<criterion>/{train,val,test}.parquet hold one row per sample:
the image path and object, the request to the student (``prompt`` for that criterion and
``system``, built by :meth:`scenefit.student.chat.StudentChat.request`; ``prompt_version``), and the
target — the criterion's label and the designated teacher's analysis sentence in the student answer
format (``scenefit.student.answer``: ``answer_format`` decision_first or reasoning_first) that
evaluation parses back. How the students are asked — prompt file, system turn, image position,
answer format — is recorded once, as the ``student`` record of OUT/manifest.json, and from there in
every student trained on it. OUT/<criterion>/README.md is a dataset card whose YAML front matter
lets ``datasets.load_dataset(OUT/<criterion>)`` find the splits, and OUT/README.md declares one
config per criterion (``load_dataset(OUT, "location", split="test")``); OUT/manifest.json also records
counts, label balance, drops and input hashes. Every row carries its image (``image`` as the
``datasets`` ``Image`` layout ``{bytes, path}``), so the folder loads anywhere and is laid out as
a hub dataset repository (docs/artifacts.md); a split row whose image cannot be read is left
out and listed in OUT/errors.jsonl.

Sizes: as the splits are (optionally down-sampled to 1:1 per criterion: ``rebalance``), or
``counts``: per criterion, exactly that many rows per split, half In-context and half Out-of-context
by the criterion's own label, drawn from the split's rows (the authors balance each criterion over
all labelled rows; with ``split.balance: none`` the splits are such pools). The draw takes rows in
hash(seed, id) order, the same order for every criterion, so the three test sets share as many
samples as their labels allow (the fused decision is scored on the shared ones).

Soft labels beside the hard one (null when unknown): ``teacher_p_out``, the designated
teacher's probability of Out-of-context for the row's criterion, and ``teachers_mean_p_out``,
the mean of that probability over the teachers that gave one (the consensus's soft view); both
come from the split tables (``designated_p_out_<criterion>``, ``teachers_mean_p_out_<criterion>``,
written by ``scenefit consensus`` when the store recorded the teachers' probabilities).

Label per criterion: the consensus label for that criterion, else the designated teacher's
own label. A row is dropped (and counted) when there is still no label, when there is no
analysis sentence, or — with ``drop_conflicts`` — when the label differs from the designated
teacher's, whose sentence would then argue for the other label (possible under ``majority``).
A row whose object name or teacher sentence would put a special-token spelling or a control
character into the prompt or the target (:mod:`scenefit.core.text`) is dropped too, counted as
``unsafe_text``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, Criterion, Label, criteria_list
from scenefit.core.images import BoxStyle, embedded_image
from scenefit.core.text import chat_text_problem, object_name_problem
from scenefit.data.split import SPLITS, SplitCounts, stable_hash
from scenefit.student.answer import DEFAULT_ANSWER_FORMAT, AnswerFormat
from scenefit.student.chat import ImagePosition, StudentChat, SystemTurn

#: Columns of every student dataset file, in order.
DATASET_COLUMNS = [
    "id", "group", "image", "object", "box", "criterion", "label", "analysis", "prompt", "system",
    "target", "prompt_version", "truth", "final", "scene", "synthetic", "teacher_p_out", "teachers_mean_p_out",
]
#: Split file name -> the split name the dataset card declares (Hugging Face's convention).
CARD_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


class DatasetsConfig(StageConfig):
    """Section ``datasets``: which criteria, label re-balancing, card metadata."""

    criteria: list[str] = Field(
        default_factory=lambda: [c.value for c in CRITERIA],
        description="Criteria to build datasets for (location, size, co_occurrence).",
    )
    rebalance: list[str] = Field(
        default_factory=list,
        description="Splits to balance 1:1 per criterion (down-sample the majority label to the minority's "
        "count, seeded): e.g. [train, val, test] (balanced checkpoint pick and test, majority class 50 %), "
        "[train], or [] (as split). true/false mean [train]/[] (older configs). Not with counts.",
    )
    counts: Optional[SplitCounts] = Field(
        default=None,
        description="Per criterion, exact rows per split (even: half In-context, half Out-of-context by that "
        "criterion's label), drawn from the split's rows, e.g. {train: 20000, val: 2000, test: 2000}; null = the "
        "splits as they are (with rebalance).",
    )
    allow_fewer: bool = Field(
        default=True,
        description="With counts: when a split cannot fill a criterion's count, every split of that criterion "
        "shrinks by one factor (proportions kept) and the manifest says so; false = an error.",
    )
    seed: int = Field(default=0, description="Seed of the re-balancing and counts draws.")
    drop_conflicts: bool = Field(
        default=True,
        description="Drop rows whose label differs from the designated teacher's own label (its analysis "
        "sentence would argue for the other label).",
    )
    license: str = Field(default="apache-2.0", description="License written into the dataset cards.")
    answer_format: AnswerFormat = Field(
        default=DEFAULT_ANSWER_FORMAT,
        description="Layout of the students' answers: decision_first ('Decision: <label>' then the sentence; "
        "the one-forward-pass fast path works) or reasoning_first (the authors' target exactly: 'Analysis:', the "
        "sentence, a blank line, 'Summary:', 'Final decision: <label>' last; the decision is read from generated "
        "text). Recorded in each student.",
    )
    prompt_file: Optional[str] = Field(
        default=None,
        description="Your own student prompt file (JSON: criteria -> template with {object}, each the text or "
        "{file: NAME.txt}; optional system, image_position, version), e.g. the authors' exact student prompts; "
        "default: the packaged prompts of the answer format. Recorded in each student.",
    )
    system_turn: SystemTurn = Field(
        default="prompt_file",
        description="The students' system turn: prompt_file (the prompt file's system text, if it has one) or "
        "template_default (none of their own: the base's chat template adds its default turn, as the authors' "
        "students were asked).",
    )
    image_position: Optional[ImagePosition] = Field(
        default=None,
        description="The image before_text or after_text in the students' user turn; null = as the prompt file says.",
    )

    @field_validator("answer_format", mode="before")
    @classmethod
    def _answer_format(cls, v: Any) -> AnswerFormat:
        return AnswerFormat.parse(v)

    @field_validator("criteria")
    @classmethod
    def _criteria(cls, v: list[str]) -> list[str]:
        return criteria_list(v)

    @model_validator(mode="after")
    def _one_way_to_balance(self):
        if self.counts is not None and self.rebalance:
            raise ValueError("datasets.counts draws balanced sets itself; set rebalance to [] (or counts to null)")
        return self

    def student_chat(self) -> StudentChat:
        """How the students of these datasets are asked (recorded in the manifest and each student)."""
        return StudentChat.from_settings(self.answer_format, self.prompt_file, self.system_turn, self.image_position)

    @field_validator("rebalance", mode="before")
    @classmethod
    def _rebalance(cls, v: Any) -> list[str]:
        if isinstance(v, bool):
            return ["train"] if v else []
        if isinstance(v, str):
            v = [] if v.strip().lower() in ("", "none") else [p.strip() for p in v.split(",") if p.strip()]
        unknown = [p for p in v if p not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; choose from {', '.join(SPLITS)}")
        return [p for p in SPLITS if p in v]  # split order, no repeats


@dataclass
class StudentDatasets:
    frames: dict[str, dict[str, pd.DataFrame]]  # criterion -> split -> rows
    manifest: dict


def _column(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series([None] * len(df), index=df.index, dtype=object)


def _probability(df: pd.DataFrame, name: str) -> pd.Series:
    """A probability column as float (NaN = unknown; split tables without it give all NaN)."""
    return pd.to_numeric(_column(df, name), errors="coerce").astype(float)


def build_rows(split_frame: pd.DataFrame, criterion: Criterion, drop_conflicts: bool = True,
               chat: Optional[StudentChat] = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """SFT rows of one split for one criterion, and the counts of dropped rows by reason
    (``chat``: how the students are asked; default the packaged decision-first prompts)."""
    crit = Criterion(criterion)
    chat = chat or StudentChat.packaged(DEFAULT_ANSWER_FORMAT)
    fmt = chat.answer_format
    c = crit.value
    teacher_label = _column(split_frame, f"designated_{c}")
    label = _column(split_frame, f"label_{c}").where(lambda s: s.notna(), teacher_label)
    analysis = _column(split_frame, f"analysis_{c}")
    analysis = analysis.where(analysis.notna() & (analysis.astype(str).str.strip() != ""), None)
    no_label = label.isna()
    no_analysis = ~no_label & analysis.isna()
    conflict = ~no_label & ~no_analysis & teacher_label.notna() & (label != teacher_label)
    # text that would become a special token in the prompt (the object) or the target (a
    # teacher's sentence): the row is dropped and counted, never trained on
    unsafe = ~no_label & ~no_analysis & pd.Series(
        [unsafe_row(o, a) for o, a in zip(_column(split_frame, "object"), analysis)], index=split_frame.index, dtype=bool)
    drop = no_label | no_analysis | unsafe | (conflict if drop_conflicts else False)
    info = {
        "no_label": int(no_label.sum()),
        "no_analysis": int(no_analysis.sum()),
        ("conflict" if drop_conflicts else "conflict_kept"): int(conflict.sum()),
    }
    if unsafe.any():
        info["unsafe_text"] = int(unsafe.sum())
    df = split_frame.assign(_label=label, _analysis=analysis)
    df = df.loc[~drop].reset_index(drop=True)
    requests = {o: chat.request(crit, str(o)) for o in df["object"].unique()}
    out = pd.DataFrame(
        {
            "id": df["id"].astype(str),
            "group": _column(df, "group"),
            "image": df["image"].astype(str),
            "object": df["object"].astype(str),
            "box": _column(df, "box"),
            "criterion": crit.value,
            "label": df["_label"].astype(str),
            "analysis": df["_analysis"].map(lambda s: " ".join(str(s).split())),
            "prompt": df["object"].map(lambda o: requests[o].prompt),
            "system": chat.system,
            "target": [fmt.render(crit, Label(lab), a) for lab, a in zip(df["_label"], df["_analysis"])],
            "prompt_version": chat.prompt_version,
            "truth": _column(df, f"truth_{crit.value}"),
            "final": _column(df, "final"),
            "scene": _column(df, "scene"),
            "synthetic": _column(df, "synthetic").fillna(False).astype(bool),
            "teacher_p_out": _probability(df, f"designated_p_out_{c}"),
            "teachers_mean_p_out": _probability(df, f"teachers_mean_p_out_{c}"),
        }
    )
    return out[DATASET_COLUMNS].reset_index(drop=True), info


def unsafe_row(obj: Any, analysis: Any) -> bool:
    """Whether a row's object name or teacher sentence may not enter a prompt (scenefit.core.text)."""
    if object_name_problem(" ".join(str(obj).split())):
        return True
    return analysis is not None and chat_text_problem(str(analysis)) is not None


def rebalance_labels(rows: pd.DataFrame, seed: int, tag: str) -> pd.DataFrame:
    """Down-sample the majority label to the minority's count, in hash(seed, tag, id) order."""
    counts = rows["label"].value_counts()
    if len(counts) < 2:
        return rows  # one label only: nothing to balance against (reported as is)
    keep_n = int(counts.min())
    order = stable_hash(seed, tag, rows["id"])
    keep = np.zeros(len(rows), dtype=bool)
    for lab in counts.index:
        idx = np.flatnonzero((rows["label"] == lab).to_numpy())
        keep[idx[np.argsort(order[idx], kind="stable")][:keep_n]] = True
    return rows.loc[keep].reset_index(drop=True)


def label_balance(rows: pd.DataFrame) -> dict:
    n_in = int((rows["label"] == Label.IN.value).sum())
    n_out = int((rows["label"] == Label.OUT.value).sum())
    return {"rows": len(rows), Label.IN.value: n_in, Label.OUT.value: n_out, "out_share": n_out / len(rows) if len(rows) else None}


def draw_balanced(rows: pd.DataFrame, pairs: int, seed: int, tag: str) -> pd.DataFrame:
    """``pairs`` In-context and ``pairs`` Out-of-context rows, each label's taken in hash(seed, tag, id)
    order (the same order for every criterion when ``tag`` does not name one)."""
    order = stable_hash(seed, tag, rows["id"])
    keep = np.zeros(len(rows), dtype=bool)
    for lab in (Label.IN.value, Label.OUT.value):
        idx = np.flatnonzero((rows["label"] == lab).to_numpy())
        keep[idx[np.argsort(order[idx], kind="stable")][:pairs]] = True
    return rows.loc[keep].reset_index(drop=True)


def counted_pairs(rows: dict[str, pd.DataFrame], counts: SplitCounts, allow_fewer: bool, criterion: str) -> tuple[dict[str, int], Optional[str]]:
    """Pairs (one In-context, one Out-of-context) to draw per split for ``counts``: as asked, or — when a
    split cannot fill its count and ``allow_fewer`` — every split's shrunk by one factor (proportions
    kept), with a message saying so; a ValueError naming the criterion otherwise."""
    want = {s: getattr(counts, s) // 2 for s in rows}
    have = {s: int(min((df["label"] == Label.IN.value).sum(), (df["label"] == Label.OUT.value).sum()))
            for s, df in rows.items()}
    factor = min([1.0] + [have[s] / want[s] for s in rows if want[s]])
    if factor >= 1.0:
        return want, None
    problem = (f"{criterion}: too few rows of one label for {dict((s, 2 * w) for s, w in want.items())} "
               f"(1:1 pairs available per split: {have})")
    if not allow_fewer:
        raise ValueError(problem + "; set datasets.allow_fewer or lower datasets.counts")
    got = {s: int(w * factor) for s, w in want.items()}
    return got, f"{problem}: took {dict((s, 2 * g) for s, g in got.items())}, the same proportions"


def build_student_datasets(splits: dict[str, pd.DataFrame], cfg: DatasetsConfig, split_manifest: Optional[dict] = None) -> StudentDatasets:
    """Rows per criterion and split; ``splits`` maps split name (train/val/test) to split rows."""
    split_manifest = split_manifest or {}
    synthetic = bool(split_manifest.get("synthetic")) or any(
        bool(df["synthetic"].any()) for df in splits.values() if "synthetic" in df and len(df)
    )
    chat = cfg.student_chat()
    frames: dict[str, dict[str, pd.DataFrame]] = {}
    per_criterion = {}
    for cname in cfg.criteria:
        crit = Criterion(cname)
        info: dict = {"splits": {}, "dropped": {}, "rebalanced": cfg.rebalance, "before_rebalance": {}, "soft_labels": {}}
        built = {}
        for split_name, df in splits.items():
            built[split_name], info["dropped"][split_name] = build_rows(df, crit, cfg.drop_conflicts, chat)
        if cfg.counts is not None:
            pairs, info["shortfall"] = counted_pairs(built, cfg.counts, cfg.allow_fewer, cname)
            info["before_draw"] = {s: label_balance(rows) for s, rows in built.items()}
            built = {s: draw_balanced(rows, pairs[s], cfg.seed, f"draw:{s}") for s, rows in built.items()}
        for split_name, rows in built.items():
            if split_name in cfg.rebalance:
                info["before_rebalance"][split_name] = label_balance(rows)
                # train keeps its historical tag, so existing seeds draw the same rows
                tag = f"rebalance:{cname}" if split_name == "train" else f"rebalance:{cname}:{split_name}"
                rows = rebalance_labels(rows, cfg.seed, tag)
            info["splits"][split_name] = label_balance(rows)
            info["soft_labels"][split_name] = {  # rows whose probabilities are known
                col: int(rows[col].notna().sum()) for col in ("teacher_p_out", "teachers_mean_p_out")
            }
            built[split_name] = rows
        frames[cname] = built
        per_criterion[cname] = info
    manifest = {
        "stage": "datasets",
        "criteria": per_criterion,
        "student": chat.model_dump(mode="json"),
        "seed": cfg.seed,
        "rebalance": cfg.rebalance,
        "counts": cfg.counts.model_dump() if cfg.counts is not None else None,
        "drop_conflicts": cfg.drop_conflicts,
        "rule": split_manifest.get("rule"),
        "designated": split_manifest.get("designated"),
        "split_seed": split_manifest.get("seed"),
        "split_balance": split_manifest.get("balance", "final"),
        "box_style": split_manifest.get("box_style"),  # how the images' boxes were drawn (train keeps it)
        "synthetic": synthetic,
        "notice": SYNTHETIC_NOTICE if synthetic else None,
    }
    return StudentDatasets(frames, manifest)


def dataset_card(criterion: str, manifest: dict, license_id: str) -> str:
    """README.md with YAML front matter (configs/data_files, license, task, tags) and a summary."""
    import yaml

    info = manifest["criteria"][criterion]
    chat = StudentChat.model_validate(manifest["student"])
    crit = Criterion(criterion)
    tags = ["scenefit", "out-of-context", "vision-language", "distillation", crit.value]
    if manifest["synthetic"]:
        tags.append("synthetic")
    front = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": CARD_SPLIT_NAMES[s], "path": f"{s}.parquet"} for s in info["splits"]],
            }
        ],
        "license": license_id,
        "task_categories": ["image-text-to-text"],
        "language": ["en"],
        "tags": tags,
        "pretty_name": f"scenefit student data — {crit.display}",
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# scenefit student dataset: {crit.display}",
        "",
    ]
    if manifest["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTICE}**", ""]
    lines += [
        f"Question: {crit.question}",
        "",
        "Each row is one image with one object in a red box (`image` carries the image itself — a `datasets` "
        "`Image`: bytes and file name —, `box` its pixels), "
        "the request to the student for this criterion (`system`, `prompt`; prompts "
        f"`{chat.prompt_version}`, system turn {'of its own' if chat.system else 'the chat template default'}, "
        f"{chat.describe_layout()}) and the `target`, "
        + ("in the authors' layout: `Analysis:` with the designated teacher's sentence for this criterion, "
           "a blank line, `Summary:`, then `Final decision: <label>` (answer format reasoning_first)."
           if chat.answer_format is AnswerFormat.REASONING_FIRST else
           "`Decision: <label>` then the designated teacher's analysis sentence for this criterion "
           "(answer format decision_first)."),
        "",
        f"Labels: consensus rule `{manifest.get('rule')}`, designated teacher `{manifest.get('designated')}`. "
        f"Split seed {manifest.get('split_seed')}; "
        + (f"per split {manifest['counts']} rows drawn 1:1 by this criterion's label."
           if manifest.get("counts") else
           f"balanced 1:1 per label: {', '.join(manifest['rebalance']) or 'no split'}."),
        f"The red boxes: {BoxStyle.words(manifest.get('box_style'))}.",
        "",
        "| split | rows | In-context | Out-of-context | dropped (no label / no analysis / conflict) |",
        "|---|---:|---:|---:|---|",
    ]
    for s, b in info["splits"].items():
        d = info["dropped"][s]
        lines.append(
            f"| {CARD_SPLIT_NAMES[s]} | {b['rows']} | {b[Label.IN.value]} | {b[Label.OUT.value]} | "
            f"{d['no_label']} / {d['no_analysis']} / {d.get('conflict', 0)} |"
        )
    lines += [
        "",
        "Load with:",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("path/to/{crit.value}")  # this folder; or the parent folder with "{crit.value}"',
        "```",
        "",
    ]
    return "\n".join(lines)


def read_splits(split_dir: Path | str) -> tuple[dict[str, pd.DataFrame], dict]:
    """The split files and manifest written by ``scenefit split``."""
    from scenefit.core.parquet_io import read_table

    d = Path(split_dir)
    present = [s for s in SPLITS if (d / f"{s}.parquet").is_file()]
    if not present:
        raise FileNotFoundError(f"no split files ({', '.join(s + '.parquet' for s in SPLITS)}) in {d}")
    manifest = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").is_file() else {}
    return {s: read_table(d / f"{s}.parquet")[0] for s in present}, manifest


#: Arrow type of an embedded image cell and the schema note that makes ``datasets`` read the
#: column as its ``Image`` feature (only the ``image`` field is declared: ``datasets`` derives the
#: other columns' features from their Arrow types).
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
HF_FEATURES = {b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()}
#: Rows per Parquet row group of a dataset file: the images of one group are read into memory at
#: once, while writing and by ``datasets`` when reading.
IMAGE_ROW_GROUP = 100


def missing_images(splits: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], list[dict]]:
    """The split rows whose image file can be read, and one error row ``{id, code, message}``
    (code ``not_found``) for each that cannot: the datasets carry their images, so a row
    without one cannot be kept."""
    kept, errors = {}, []
    for name, df in splits.items():
        ok = df["image"].map(lambda p: isinstance(p, str) and os.path.isfile(p)) if len(df) else df["image"].astype(bool)
        for sid, image in zip(df.loc[~ok, "id"], df.loc[~ok, "image"]):
            errors.append({"id": str(sid), "code": "not_found", "split": name,
                           "message": f"image {image!r} is not a readable file; the row is left out of every criterion"})
        kept[name] = df.loc[ok].reset_index(drop=True)
    return kept, errors


def _embed_images(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.assign(image=[embedded_image(p) for p in rows["image"]])


def root_card(manifest: dict, license_id: str) -> str:
    """OUT/README.md: one ``datasets`` config per criterion (its splits' files), so
    ``load_dataset(OUT, "location", split="test")`` reads one criterion and ``load_dataset(OUT)``
    asks which, instead of merging the three."""
    import yaml

    configs = [{"config_name": c, "data_files": [{"split": CARD_SPLIT_NAMES[s], "path": f"{c}/{s}.parquet"}
                                                 for s in info["splits"]]}
               for c, info in manifest["criteria"].items()]
    tags = ["scenefit", "out-of-context", "vision-language", "distillation"] + (["synthetic"] if manifest["synthetic"] else [])
    front = {"configs": configs, "license": license_id, "task_categories": ["image-text-to-text"], "language": ["en"],
             "tags": tags, "pretty_name": "scenefit student datasets"}
    first = next(iter(manifest["criteria"]), "location")
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             "# scenefit student datasets", ""]
    if manifest["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTICE}**", ""]
    lines += [
        "One configuration per criterion (" + ", ".join(f"`{c}`" for c in manifest["criteria"]) + "), each with its "
        "train / validation / test split; every row carries its image (the `image` column, a `datasets` `Image`), "
        "so this folder needs nothing beside it. Each criterion's folder has its own card with its counts.",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("path/to/this/folder", "{first}", split="test")',
        'ds[0]["image"]  # a PIL image with the red box',
        "```",
        "",
    ]
    return "\n".join(lines)


def write_student_datasets(result: StudentDatasets, out_dir: Path | str, inputs: dict[str, str], license_id: str,
                           errors: Optional[list[dict]] = None) -> dict[str, Path]:
    """OUT/<criterion>/{split}.parquet (each row carrying its image), OUT/<criterion>/README.md,
    OUT/README.md (one config per criterion), OUT/manifest.json and OUT/errors.jsonl (rows left
    out for want of an image, :func:`missing_images`)."""
    from scenefit.core.files import atomic_write_text, write_json, write_jsonl
    from scenefit.core.parquet_io import write_table

    out = Path(out_dir)
    manifest = {**result.manifest, "inputs": inputs, "images": "embedded", "missing_images": len(errors or [])}
    paths: dict[str, Path] = {}
    for cname, per_split in result.frames.items():
        meta = {k: manifest.get(k) for k in ("stage", "rule", "designated", "synthetic", "notice")}
        meta["prompt_version"] = manifest["student"]["prompt_version"]
        for split_name, rows in per_split.items():
            paths[f"{cname}/{split_name}"] = write_table(
                rows, out / cname / f"{split_name}.parquet", {**meta, "criterion": cname, "split": split_name},
                types={"image": IMAGE_TYPE}, batches=_embed_images, batch_rows=IMAGE_ROW_GROUP,
                schema_metadata=HF_FEATURES,
            )
        paths[f"{cname}/README.md"] = atomic_write_text(dataset_card(cname, manifest, license_id), out / cname / "README.md")
    paths["README.md"] = atomic_write_text(root_card(manifest, license_id), out / "README.md")
    paths["errors"] = write_jsonl(errors or [], out / "errors.jsonl")
    paths["manifest"] = write_json(manifest, out / "manifest.json")
    return paths
