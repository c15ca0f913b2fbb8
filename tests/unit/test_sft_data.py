"""Student datasets: labels and drops per criterion, re-balancing, loading with `datasets`,
rendering through the tiny model's chat template, and the three verbs end to end.

    .venv/bin/python -m pytest tests/unit/test_sft_data.py -q
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.data.consensus import output_columns
from scenefit.data.datasets import (
    DATASET_COLUMNS,
    DatasetsConfig,
    build_rows,
    build_student_datasets,
    write_student_datasets,
)
from scenefit.prompts import student_prompt, student_system_prompt
from scenefit.student.answer import parse_student_answer, render_student_answer

I, O = "In-context", "Out-of-context"


def split_row(sid, final=O, group=None, image="/img/x.png", **fields):
    row = {c: None for c in output_columns()}
    row.update(id=sid, image=image, object="zebra", box=[1, 1, 9, 9], group=group or f"g-{sid}", scene="beach",
               boxed=False, synthetic=True, final=final, n_usable=3)
    for c in CRITERIA:
        row[f"analysis_{c.value}"] = f"The zebra's {c.value} in {sid}."
    row.update(fields)
    return row


def test_label_falls_back_to_the_designated_teacher_and_drops_are_counted():
    df = pd.DataFrame([
        split_row("consensus", label_location=O, designated_location=O),
        split_row("fallback", label_location=None, designated_location=I),
        split_row("nolabel", label_location=None, designated_location=None),
        split_row("noanalysis", label_location=O, designated_location=O, analysis_location="  "),
        split_row("conflict", label_location=O, designated_location=I),
    ])
    rows, drops = build_rows(df, Criterion.LOCATION)
    assert drops == {"no_label": 1, "no_analysis": 1, "conflict": 1}
    assert dict(zip(rows["id"], rows["label"])) == {"consensus": O, "fallback": I}
    assert list(rows.columns) == DATASET_COLUMNS
    r = rows.set_index("id").loc["fallback"]
    assert r["prompt"] == student_prompt(Criterion.LOCATION).render("zebra")
    assert r["system"] == student_system_prompt()
    assert r["target"] == render_student_answer(Criterion.LOCATION, Label.IN, "The zebra's location in fallback.")
    parsed = parse_student_answer(r["target"], Criterion.LOCATION)
    assert (parsed.label, parsed.analysis, parsed.status) == (Label.IN, "The zebra's location in fallback.", "ok")
    kept_rows, kept_drops = build_rows(df, Criterion.LOCATION, drop_conflicts=False)
    assert kept_drops["conflict_kept"] == 1 and "conflict" in set(kept_rows["id"])


def _splits(n_train=40, n_eval=10, out_share_location=0.25, seed=0):
    rng = np.random.default_rng(seed)
    frames = {}
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        rows = []
        for i in range(n):
            loc = O if rng.random() < out_share_location else I
            rows.append(split_row(f"{split}{i:03d}", final=O if i % 2 else I, label_location=loc, designated_location=loc,
                                  label_size=I, designated_size=I, label_co_occurrence=O, designated_co_occurrence=O,
                                  truth_location=loc))
        frames[split] = pd.DataFrame(rows)
    return frames


def test_rebalance_downsamples_the_majority_label_in_train_only():
    splits = _splits()
    plain = build_student_datasets(splits, DatasetsConfig())
    bal = build_student_datasets(splits, DatasetsConfig(rebalance=True, seed=1))
    loc_train = bal.frames["location"]["train"]
    n_min = int(min(splits["train"]["label_location"].value_counts()))
    assert (loc_train["label"] == I).sum() == (loc_train["label"] == O).sum() == n_min
    assert len(bal.frames["location"]["val"]) == len(plain.frames["location"]["val"]) == 10
    info = bal.manifest["criteria"]["location"]
    assert info["before_rebalance"]["train"]["rows"] == 40 and info["splits"]["train"]["out_share"] == 0.5
    # a criterion with one label only cannot be balanced: left as is, and its balance reported
    assert bal.manifest["criteria"]["size"]["splits"]["train"] == {"rows": 40, I: 40, O: 0, "out_share": 0.0}
    again = build_student_datasets(splits, DatasetsConfig(rebalance=True, seed=1))
    assert again.frames["location"]["train"]["id"].tolist() == loc_train["id"].tolist()


def test_rebalance_every_split_gives_balanced_val_and_test_and_keeps_train_draw():
    splits = _splits()
    every = build_student_datasets(splits, DatasetsConfig(rebalance=["test", "train", "val"], seed=1))
    assert every.manifest["rebalance"] == ["train", "val", "test"]  # split order, whatever the order given
    for split in ("train", "val", "test"):
        rows = every.frames["location"][split]
        n_in, n_out = (rows["label"] == I).sum(), (rows["label"] == O).sum()
        raw = splits[split]["label_location"].value_counts()
        assert n_in == n_out == raw.min(), split  # 1:1 at the minority's count: majority class 50 %
    # balancing val/test does not change which train rows an existing seed keeps
    train_only = build_student_datasets(splits, DatasetsConfig(rebalance=True, seed=1))
    assert every.frames["location"]["train"]["id"].tolist() == train_only.frames["location"]["train"]["id"].tolist()
    with pytest.raises(ValueError, match="unknown split"):
        DatasetsConfig(rebalance=["train", "dev"])


def test_written_datasets_load_with_datasets_and_carry_a_card(tmp_path, monkeypatch):
    import datasets

    picture = tmp_path / "x.png"
    Image.new("RGB", (12, 10), (1, 2, 3)).save(picture)
    splits = {k: v.assign(image=str(picture)) for k, v in _splits().items()}
    res = build_student_datasets(splits, DatasetsConfig(), {"synthetic": True, "rule": "unanimous_final", "seed": 0})
    write_student_datasets(res, tmp_path / "ds", {"train.parquet": "h"}, "apache-2.0")
    picture.unlink()  # the datasets carry their images: nothing outside the folder is read again
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    folder = tmp_path / "ds" / "location"
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "- synthetic" in card and SYNTHETIC_NOTICE in card
    cache = str(tmp_path / "hf_cache")
    by_card = datasets.load_dataset(str(folder), cache_dir=cache)
    assert set(by_card) == {"train", "validation", "test"} and by_card["train"].num_rows == 40
    by_files = datasets.load_dataset(
        "parquet", data_files={s: str(folder / f"{s}.parquet") for s in ("train", "val", "test")}, cache_dir=cache
    )
    row = by_files["test"][0]
    assert row["criterion"] == "location" and row["target"].startswith("Decision: ")
    assert row["synthetic"] is True and row["box"] == [1, 1, 9, 9]
    # the root card: one config per criterion, never the three merged
    test = datasets.load_dataset(str(tmp_path / "ds"), "size", split="test", cache_dir=cache)
    assert isinstance(test.features["image"], datasets.Image) and set(test["criterion"]) == {"size"}
    assert test[0]["image"].size == (12, 10) and test[0]["image"].getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ValueError, match="location"):  # which config? (names them) — not a silent merge
        datasets.load_dataset(str(tmp_path / "ds"), cache_dir=cache)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["notice"] == SYNTHETIC_NOTICE and set(manifest["criteria"]) == {c.value for c in CRITERIA}
    assert manifest["images"] == "embedded"


def test_rows_render_through_the_tiny_models_chat_template(tmp_path, tiny_model_dir):
    from scenefit.models.loading import load_processor
    from scenefit.student.chat import chat_messages

    img_path = tmp_path / "scene.png"
    Image.new("RGB", (112, 112), (40, 120, 200)).save(img_path)
    res = build_student_datasets(
        {"train": pd.DataFrame([split_row("s1", image=str(img_path), label_size=O, designated_size=O)])},
        DatasetsConfig(criteria=["size"]),
    )
    row = res.frames["size"]["train"].iloc[0].to_dict()
    processor = load_processor(tiny_model_dir)
    text = processor.apply_chat_template(chat_messages(row["prompt"], row["system"], row["target"]), tokenize=False)
    assert row["prompt"] in text and row["target"] in text and row["system"] in text
    assert "<|image_pad|>" in text
    prompt_only = processor.apply_chat_template(chat_messages(row["prompt"], row["system"]), tokenize=False,
                                                add_generation_prompt=True)
    assert row["target"] not in prompt_only and prompt_only.rstrip().endswith("assistant")
    batch = processor(text=[text], images=[Image.open(img_path)], return_tensors="pt")
    pad_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"] == pad_id).sum()) > 1  # the one placeholder expanded to the image's tokens


# --------------------------------------------------------------------------- the verbs end to end


def _store_and_manifest(tmp_path, n=60):
    """A real annotation store (3 teachers) and a normalised manifest with truth."""
    from scenefit.core.records import MANIFEST_COLUMNS, Sample
    from scenefit.teachers.store import AnnotationStore

    rng = np.random.default_rng(5)
    samples, rows = [], []
    for i in range(n):
        truth = {c: Label.OUT if rng.random() < 0.2 else Label.IN for c in CRITERIA}
        s = Sample(id=f"s{i:03d}", image=f"images/s{i:03d}.png", object="cow", box=(2, 2, 20, 20),
                   group=f"src{i // 2}", scene="farm", synthetic=True, truth=truth)
        samples.append(s.to_row())
        for t, err in (("alpha", 0.05), ("beta", 0.1), ("gamma", 0.2)):
            labels = {c: (lab if rng.random() > err else (Label.IN if lab is Label.OUT else Label.OUT)) for c, lab in truth.items()}
            final = Label.OUT if any(v is Label.OUT for v in labels.values()) else Label.IN
            status = "unparseable" if (t == "gamma" and i % 10 == 0) else "ok"
            row = {"sample_id": s.id, "teacher": t, "prompt_hash": "ph1", "model_id": t, "backend": "simulated",
                   "raw": "answer", "status": status, "final": final.value if status == "ok" else None}
            for c in CRITERIA:
                row[f"label_{c.value}"] = labels[c].value if status == "ok" else None
                row[f"analysis_{c.value}"] = f"{t}: the cow's {c.value} looks fine." if status == "ok" else None
            rows.append(row)
    db = tmp_path / "annotations.sqlite"
    with AnnotationStore(db) as store:
        store.put_many(rows)
    man = tmp_path / "manifest.parquet"
    pd.DataFrame(samples, columns=MANIFEST_COLUMNS).to_parquet(man, index=False)
    return db, man


def test_consensus_split_datasets_verbs_end_to_end(tmp_path):
    from scenefit.cli import app

    db, man = _store_and_manifest(tmp_path)
    (tmp_path / "images").mkdir()
    for i in range(60):
        if i != 7:  # one image missing: its row ends as an error line of `datasets`, the rest goes on
            Image.new("RGB", (24, 24), (i, 0, 0)).save(tmp_path / "images" / f"s{i:03d}.png")
    runner = CliRunner()
    r = runner.invoke(app, ["consensus", "--db", str(db), "--manifest", str(man), "--out", str(tmp_path / "c"),
                            "--designated", "alpha", "--rule", "majority", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["rule"] == "majority" and report["designated"] == "alpha" and report["notice"] == SYNTHETIC_NOTICE
    assert report["teacher_status"]["gamma"]["parse_failures"] == 6
    assert report["accuracy"]["before"]["final"]["n"] == 60
    assert set(report["inputs"]) == {"annotations", "manifest"}

    r = runner.invoke(app, ["split", str(tmp_path / "c" / "consensus.parquet"), "--out", str(tmp_path / "s"),
                            "--counts", "20,4,4", "--seed", "2"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["rule"] == "majority" and m["seed"] == 2 and m["counts"] == {"train": 20, "val": 4, "test": 4}
    assert m["inputs"]["consensus.parquet"]

    r = runner.invoke(app, ["datasets", str(tmp_path / "s"), "--out", str(tmp_path / "d"), "--rebalance", "train,val"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["rebalance"] == ["train", "val"]
    for c in CRITERIA:
        for s in ("train", "val", "test"):
            df = pd.read_parquet(tmp_path / "d" / c.value / f"{s}.parquet")
            assert (df["criterion"] == c.value).all() and "s007" not in set(df["id"])
            # each row carries its image (bytes and file name), read back as the split's own picture
            assert all(Image.open(io.BytesIO(im["bytes"])).getpixel((0, 0))[0] == int(im["path"][1:4])
                       for im in df["image"])
    errors = [json.loads(line) for line in (tmp_path / "d" / "errors.jsonl").read_text().splitlines()]
    in_splits = set(pd.concat([pd.read_parquet(tmp_path / "s" / f"{s}.parquet") for s in ("train", "val", "test")])["id"])
    assert [(e["id"], e["code"]) for e in errors] == ([("s007", "not_found")] if "s007" in in_splits else [])

    r = runner.invoke(app, ["split", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "not found" in r.output


def test_consensus_verb_reports_bad_input_without_traceback(tmp_path):
    from scenefit.cli import app

    db, man = _store_and_manifest(tmp_path, n=4)
    r = CliRunner().invoke(app, ["consensus", "--db", str(db), "--manifest", str(man), "--out", str(tmp_path / "c"),
                                 "--teachers", "alpha,zeta"])
    assert r.exit_code == 2 and "zeta" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["consensus", "--db", str(tmp_path / "nope.sqlite"), "--manifest", str(man),
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "not found" in r.output
