"""Teachers' label probabilities: kept in the store (and an older store migrated), carried by
consensus into the split tables, written into the student datasets; the simulated personas'
confidence model and its calibration; the reading of P(out) from label tokens.

    .venv/bin/python -m pytest tests/unit/test_soft_labels.py -q
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.core.records import Sample
from scenefit.data.consensus import ConsensusConfig, build_consensus
from scenefit.data.datasets import DATASET_COLUMNS, build_rows
from scenefit.prompts import render_teacher_answer
from scenefit.teachers.label_probs import TokenChoice, p_out_from_tokens
from scenefit.teachers.store import COLUMNS, P_OUT_KEYS, AnnotationStore, p_out_values
from support.soft_labels import tokens_of  # noqa: F401

I, O = Label.IN.value, Label.OUT.value

def answer_row(sid, teacher, labels, p_out=None, status="ok", note=None):
    row = {"sample_id": sid, "teacher": teacher, "prompt_hash": "h", "status": status, "raw": "x",
           "final": O if O in labels.values() else I, "p_out": p_out, "p_out_note": note}
    for c in CRITERIA:
        row[f"label_{c.value}"] = labels[c.value]
        row[f"analysis_{c.value}"] = f"{teacher} on {c.value} of {sid}."
    return row

ALL_IN = {c.value: I for c in CRITERIA}

LOC_OUT = {**ALL_IN, "location": O}

def test_store_keeps_probabilities_and_refuses_a_bad_one(tmp_path):
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        store.put_many([answer_row("s1", "t", LOC_OUT, {"location": 0.9, "final": 0.95}, note="size: no label token")])
        row = store.rows()[0]
        assert p_out_values(row["p_out"]) == {"location": 0.9, "size": None, "co_occurrence": None, "final": 0.95}
        assert row["p_out_note"] == "size: no label token"
        for bad, words in (({"size": 1.5}, "p_out.size of 's2' is 1.5"), ({"colour": 0.5}, "unknown key"),
                           ({"final": "high"}, "p_out.final of 's2' is not a number")):
            with pytest.raises(ValueError, match=words):
                store.put_many([answer_row("s2", "t", ALL_IN, bad)])
        assert store.count() == 1

OLD_SCHEMA = """
CREATE TABLE annotations (
    sample_id TEXT NOT NULL, teacher TEXT NOT NULL, prompt_hash TEXT NOT NULL, model_id TEXT, backend TEXT,
    raw TEXT, status TEXT NOT NULL, reason TEXT, final TEXT,
    label_location TEXT, label_size TEXT, label_co_occurrence TEXT,
    analysis_location TEXT, analysis_size TEXT, analysis_co_occurrence TEXT,
    decoding TEXT, latency_s REAL, attempts INTEGER, created_at TEXT NOT NULL,
    PRIMARY KEY (sample_id, teacher, prompt_hash)
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO annotations (sample_id, teacher, prompt_hash, status, final, label_location, created_at)
VALUES ('old1', 't', 'h', 'ok', 'Out-of-context', 'Out-of-context', '2026-01-01T00:00:00+00:00');
"""

def test_a_store_written_before_probabilities_opens_and_gains_the_columns(tmp_path):
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.executescript(OLD_SCHEMA)
    con.commit()
    con.close()
    with AnnotationStore(db) as store:
        rows = store.rows()
        assert [r["sample_id"] for r in rows] == ["old1"] and rows[0]["p_out"] is None
        assert p_out_values(rows[0]["p_out"]) == {k: None for k in P_OUT_KEYS}
        store.put_many([answer_row("new1", "t", ALL_IN, {"location": 0.1})])
        assert list(store.to_frame().columns) == COLUMNS
    with AnnotationStore(db) as store:  # a second open migrates nothing twice
        assert store.count() == 2
        got = {r["sample_id"]: p_out_values(r["p_out"])["location"] for r in store.rows()}
        assert got == {"old1": None, "new1": 0.1}

def _manifest(ids):
    return pd.DataFrame({"id": ids, "image": [f"/img/{i}.png" for i in ids], "object": "zebra",
                         "box": [[1, 1, 5, 5]] * len(ids), "synthetic": True})

def test_consensus_carries_designated_and_mean_probabilities_and_datasets_write_them(tmp_path):
    answers = pd.DataFrame([
        # s1: all three give probabilities
        answer_row("s1", "a", LOC_OUT, {"location": 0.9, "size": 0.1, "co_occurrence": 0.2, "final": 0.92}),
        answer_row("s1", "b", LOC_OUT, {"location": 0.7, "size": 0.3, "co_occurrence": 0.0, "final": 0.8}),
        answer_row("s1", "c", LOC_OUT, {"location": 0.5, "size": 0.2, "co_occurrence": 0.1, "final": 0.6}),
        # s2: the designated teacher gives none (an older store); one co-judge's answer is unusable
        answer_row("s2", "a", ALL_IN, None),
        answer_row("s2", "b", ALL_IN, {"location": 0.2, "size": None, "co_occurrence": 0.1, "final": 0.3}),
        answer_row("s2", "c", ALL_IN, {"location": 0.9, "final": 0.9}, status="unparseable"),
    ])
    res = build_consensus(answers, _manifest(["s1", "s2"]), ConsensusConfig(rule="majority", designated="a"))
    f = res.frame.set_index("id")
    assert f.loc["s1", "designated_p_out_location"] == pytest.approx(0.9)
    assert f.loc["s1", "teachers_mean_p_out_location"] == pytest.approx(0.7)
    assert f.loc["s1", "teachers_mean_p_out_final"] == pytest.approx((0.92 + 0.8 + 0.6) / 3)
    assert math.isnan(f.loc["s2", "designated_p_out_location"])
    assert f.loc["s2", "teachers_mean_p_out_location"] == pytest.approx(0.2)  # the unusable answer does not count
    assert math.isnan(f.loc["s2", "teachers_mean_p_out_size"])  # nobody gave one
    assert res.report["teacher_status"]["a"]["with_p_out"] == 1

    rows, _ = build_rows(res.frame, Criterion.LOCATION)
    assert list(rows.columns) == DATASET_COLUMNS
    from scenefit.core.parquet_io import write_table

    path = write_table(rows, tmp_path / "location" / "train.parquet")
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    assert str(table.schema.field("teacher_p_out").type) == "double"
    got = dict(zip(table.column("id").to_pylist(), zip(table.column("teacher_p_out").to_pylist(),
                                                        table.column("teachers_mean_p_out").to_pylist())))
    assert got["s1"] == (pytest.approx(0.9), pytest.approx(0.7))
    assert got["s2"][0] is None and got["s2"][1] == pytest.approx(0.2)  # null, not NaN, in the file

def test_consensus_refuses_a_probability_outside_0_1_naming_it():
    answers = pd.DataFrame([answer_row("s1", "a", ALL_IN, {"location": 0.2}),
                            answer_row("s2", "a", ALL_IN, json.dumps({"size": 1.7}))])
    with pytest.raises(ValueError, match=r"answer row 1: p_out.size = 1.7 is not a probability"):
        build_consensus(answers, _manifest(["s1", "s2"]), ConsensusConfig())

def test_split_tables_without_probabilities_give_null_columns(tmp_path):
    from scenefit.core.parquet_io import write_table
    from scenefit.data.consensus import output_columns

    old = pd.DataFrame([{c: None for c in output_columns() if "p_out" not in c}])
    old = old.assign(id="s", image="/i.png", object="zebra", label_size=I, designated_size=I,
                     analysis_size="The zebra fits.", synthetic=True)
    rows, _ = build_rows(old, Criterion.SIZE)
    assert rows["teacher_p_out"].isna().all() and rows["teachers_mean_p_out"].dtype == float
    import pyarrow.parquet as pq

    table = pq.read_table(write_table(rows, tmp_path / "t.parquet"))
    assert str(table.schema.field("teachers_mean_p_out").type) == "double"
    assert table.column("teacher_p_out").to_pylist() == [None]

ANALYSES = {c: f"The zebra is fine for {c.value}." for c in CRITERIA}

@pytest.mark.parametrize("variant", ["text", "json"])
def test_p_out_is_read_at_each_summary_label_and_the_final_decision(variant):
    labels = {Criterion.LOCATION: Label.OUT, Criterion.SIZE: Label.IN, Criterion.CO_OCCURRENCE: Label.IN}
    text = render_teacher_answer(ANALYSES, labels, variant)
    probs = {"location": 0.8, "size": 0.25, "co_occurrence": 0.1, "final": 0.85}
    p_out, note = p_out_from_tokens(tokens_of(text, probs))
    assert note is None
    assert p_out == {k: pytest.approx(v, abs=1e-6) for k, v in probs.items()}

def test_decorated_answers_and_missing_labels_say_why():
    text = ("Analysis:\n- **Location:** The zebra floats.\n- **Size:** Fine.\n- **Co-occurrence:** Fine.\n"
            "Summary:\n- **Location:** out-of-context\n- **Co-occurrence:** In-context\nfinal decision: out")
    p_out, note = p_out_from_tokens(tokens_of(text, {"location": 0.6, "co_occurrence": 0.3, "final": 0.9}))
    assert p_out["location"] == pytest.approx(0.6) and p_out["co_occurrence"] == pytest.approx(0.3)
    assert p_out["final"] == pytest.approx(0.9)
    assert p_out["size"] is None and note == "size: no label"
    # alternatives that are no label at all (or none given) leave the value unknown, saying so
    text2 = render_teacher_answer(ANALYSES, {c: Label.IN for c in CRITERIA})
    bare = [TokenChoice(t.token, t.logprob, ()) for t in tokens_of(text2, {})]
    p_out, note = p_out_from_tokens(bare)
    assert all(v is None for v in p_out.values()) and note == "location, size, co_occurrence, final: no top_logprobs"
    odd = [TokenChoice(t.token, t.logprob, ((" maybe", -0.1),)) if t.token == " In" else t for t in tokens_of(text2, {})]
    p_out, note = p_out_from_tokens(odd)
    assert p_out["size"] == pytest.approx(0.0)  # the chosen " In" is an In alternative itself
    derived = text2.rsplit("\n", 1)[0]  # no final decision written
    p_out, note = p_out_from_tokens(tokens_of(derived, {"location": 0.1, "size": 0.1, "co_occurrence": 0.1}))
    assert p_out["final"] is None and "final: no final decision written" in note

def test_tokens_that_merge_the_colon_with_the_label_are_read():
    text = render_teacher_answer(ANALYSES, {c: Label.IN for c in CRITERIA})
    toks = tokens_of(text, {})
    merged = []
    for t in toks:  # ":" + " In" -> ": In", with ": Out" as the alternative
        if merged and merged[-1].token == ":" and t.token == " In":
            merged[-1] = TokenChoice(": In", math.log(0.75), ((": In", math.log(0.75)), (": Out", math.log(0.25))))
        else:
            merged.append(t)
    p_out, note = p_out_from_tokens(merged)
    assert p_out["location"] == pytest.approx(0.25) and p_out["final"] == pytest.approx(0.25)

def _draws(persona, n):
    from scenefit.testbed.personas import SimulatedTeacher

    t = SimulatedTeacher(persona)
    confs, right = [], []
    for i in range(n):
        truth_out = i % 2 == 0
        s = Sample(id=f"cal{i:05d}", image="x.png", object="zebra", box=(1, 1, 5, 5), synthetic=True,
                   truth={c: (Label.OUT if truth_out else Label.IN) for c in CRITERIA})
        a = t.respond(s)
        for c in CRITERIA:
            confs.append(a.confidence[c])
            right.append(a.beliefs[c] is s.truth[c])
            p = a.p_out[c.value]
            if p is not None:  # p_out is the confidence in the stated label, turned towards Out
                assert p == pytest.approx(a.confidence[c] if a.beliefs[c] is Label.OUT else 1 - a.confidence[c], abs=1e-6)
    return np.array(confs), np.array(right)

def test_simulated_confidence_is_calibrated_as_documented():
    """docs/teachers.md: mean confidence 1 - error rate, wrong labels held with less confidence
    than right ones, and within each confidence bin the share right equals the confidence."""
    from scenefit.testbed.personas import PersonaConfig

    persona = PersonaConfig(name="cal", model_id="test", seed=5, error_rates={c.value: 0.15 for c in CRITERIA})
    conf, right = _draws(persona, 2000)  # 6,000 labels
    assert (conf >= 0.5).all() and (conf <= 1).all()
    assert abs(right.mean() - 0.85) < 0.02
    assert abs(conf.mean() - 0.85) < 0.01
    assert conf[~right].mean() < conf[right].mean() - 0.05
    bins = np.minimum(((conf - 0.5) / 0.5 * 5).astype(int), 4)
    ece = sum(abs(right[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean() for b in range(5) if (bins == b).any())
    assert ece < 0.025
    for b in range(5):  # every well-filled bin is calibrated on its own
        if (bins == b).sum() >= 300:
            assert abs(right[bins == b].mean() - conf[bins == b].mean()) < 0.06, b

def test_confidence_leaves_the_answer_text_as_it_was():
    """The confidence draws use their own seeded stream: texts (and hence every stored demo
    answer) are the same as without them, and the values repeat."""
    from scenefit.testbed.personas import SimulatedTeacher

    s = Sample(id="same", image="x.png", object="zebra", box=(1, 1, 5, 5), synthetic=True,
               truth={c: Label.IN for c in CRITERIA})
    a, b = SimulatedTeacher("qwen72b-sim").respond(s), SimulatedTeacher("qwen72b-sim").respond(s)
    assert a.text == b.text and a.p_out == b.p_out
    assert a.p_out["final"] == pytest.approx(1 - np.prod([1 - a.p_out[c.value] for c in CRITERIA]), abs=1e-5)

@pytest.mark.parametrize("style", ["plain", "lower_bold", "json"])
def test_p_out_from_generation_logits_with_the_qwen_vocabulary(standin_model_dir, style):
    """The transformers path (token_choices + p_out_from_tokens) on Qwen's real tokenizer: an
    answer tokenized as Qwen tokenizes it, logits that put P(out) = p at each label position
    (and near-certainty elsewhere), and the probabilities read back are those p."""
    import torch
    from transformers import AutoTokenizer

    from scenefit.teachers.transformers_backend import label_probabilities, token_choices

    tok = AutoTokenizer.from_pretrained(standin_model_dir)
    labels = {Criterion.LOCATION: Label.OUT, Criterion.SIZE: Label.IN, Criterion.CO_OCCURRENCE: Label.OUT}
    text = render_teacher_answer(ANALYSES, labels, "json" if style == "json" else "text")
    if style == "lower_bold":
        text = "\n".join(f"**{k}:**{v}" if v else line for line in text.lower().split("\n")
                         for k, _, v in [line.partition(":")])
    probs = {"location": 0.8, "size": 0.3, "co_occurrence": 0.65, "final": 0.9}
    # where each label starts, from the text itself: the In/Out words after "Summary", in the
    # prompt's order (Location, Co-occurrence, Size), then the final decision
    import re

    summary_at = text.lower().index("summary")
    found = [m.start() for m in re.finditer(r"(?i)\b(in|out)-", text) if m.start() > summary_at]
    offsets = dict(zip(["location", "co_occurrence", "size", "final"], found))
    assert len(offsets) == 4
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    vocab = len(tok)
    steps = []
    for i, tid in enumerate(ids):
        row = torch.zeros(vocab)
        row[tid] = 25.0
        key = next((k for k, off in offsets.items() if spans[i][0] <= off < spans[i][1]), None)
        if key is not None:
            piece = tok.decode([tid])
            word = piece.strip().strip('"')
            lead = piece[: piece.index(word)]
            flip = {"out": "in", "in": "out", "Out": "In", "In": "Out"}[word]
            other = tok.encode(lead + flip, add_special_tokens=False)
            assert len(other) == 1, (lead + flip, other)  # " In" / " Out" / "\"In" are single Qwen tokens
            p_chosen = probs[key] if word.lower() == "out" else 1 - probs[key]
            row[tid] = 25.0 + math.log(p_chosen)
            row[other[0]] = 25.0 + math.log(1 - p_chosen)
        steps.append(row)
    tokens = token_choices(tok, ids, steps, 3)
    assert "".join(t.token for t in tokens) == text
    p_out, note = label_probabilities(tokens, asked=True)
    assert note is None, note
    assert p_out == {k: pytest.approx(v, abs=1e-5) for k, v in probs.items()}

def test_import_answers_reads_probability_columns_and_rejects_bad_ones_by_line_and_column(tmp_path):
    import csv

    from scenefit.teachers.import_answers import import_answers

    text = render_teacher_answer(ANALYSES, {c: Label.IN for c in CRITERIA})
    f = tmp_path / "answers.csv"
    with f.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["coco_index", "response", "p_out_location", "p_out_size", "p_out_co_occurrence", "p_out_final"])
        w.writerow(["1", text, "0.1", "0.2", "0.05", "0.3"])
        w.writerow(["2", text, "0.1", "", "0.05", "0.3"])       # size unknown
        w.writerow(["3", text, "1.5", "0.2", "0.05", "0.3"])    # not a probability
        w.writerow(["4", text, "0.1", "high", "0.05", "0.3"])   # not a number
        w.writerow(["5", text, "0", "1", "nan", "0.3"])         # NaN is no probability
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        res = import_answers(f, store, teacher="qwen72b")
        rows = {r["sample_id"]: r for r in store.rows()}
    assert res["stored"] == 2 and sorted(rows) == ["1", "2"]
    reasons = {e["id"]: e["message"] for e in res["errors"]}
    assert set(reasons) == {"3", "4", "5"}
    assert {e["id"]: e["row"] for e in res["errors"]} == {"3": 3, "4": 4, "5": 5}
    # each answer spans 9 lines: row 3 starts on line 20, row 4 on line 29
    assert "line 20" in reasons["3"] and "p_out_location is '1.5'" in reasons["3"]
    assert "line 29" in reasons["4"] and "p_out_size is 'high'" in reasons["4"]
    assert "p_out_co_occurrence is 'nan'" in reasons["5"]
    assert p_out_values(rows["1"]["p_out"]) == {"location": 0.1, "size": 0.2, "co_occurrence": 0.05, "final": 0.3}
    assert rows["1"]["p_out_note"] is None
    assert p_out_values(rows["2"]["p_out"])["size"] is None and rows["2"]["p_out_note"] == "size: not in the imported file"

    plain = tmp_path / "plain.jsonl"  # no probability columns: nothing known, and it says so
    plain.write_text(json.dumps({"id": "9", "answer": text}) + "\n")
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        import_answers(plain, store, teacher="molmo")
        row = store.rows(teacher="molmo")[0]
    assert row["p_out"] is None and row["p_out_note"] == "not in the imported file"

