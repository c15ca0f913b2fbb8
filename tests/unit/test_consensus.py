"""Consensus rules on hand-made answer tables, the agreement statistics, and the report.

    .venv/bin/python -m pytest tests/unit/test_consensus.py -q
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scenefit import SYNTHETIC_NOTICE
from scenefit.data.agreement import cohen_kappa, fleiss_from_codes, fleiss_kappa, pairwise_cohen
from scenefit.data.consensus import ConsensusConfig, answer_matrix, apply_rule, build_consensus
from scenefit.data.consensus_report import report_tables

I, O = "In-context", "Out-of-context"
SHORT = {"I": I, "O": O, None: None, "-": None}


def answer(sid, teacher, status="ok", final=None, loc=None, size=None, co=None, prompt="p1"):
    """One answer row in the store's frame shape; labels as 'I'/'O'/None."""
    labels = {"location": SHORT[loc], "size": SHORT[size], "co_occurrence": SHORT[co]}
    row = {"sample_id": sid, "teacher": teacher, "prompt_hash": prompt, "status": status, "final": SHORT[final],
           "model_id": f"m-{teacher}", "backend": "simulated", "raw": None if status == "failed" else "text",
           "reason": None}
    for c, lab in labels.items():
        row[f"label_{c}"] = lab
        row[f"analysis_{c}"] = f"{teacher} on {c} of {sid}" if lab else None
    return row


def answers(*specs) -> pd.DataFrame:
    """specs: (sid, teacher, status, 'FLSC') where the 4 letters are final, location, size, co-occurrence."""
    rows = []
    for sid, teacher, status, code in specs:
        f, loc, size, co = (None if ch == "-" else ch for ch in code)
        rows.append(answer(sid, teacher, status, f, loc, size, co))
    return pd.DataFrame(rows)


def manifest(ids, truth=None, synthetic=False) -> pd.DataFrame:
    rows = []
    for sid in ids:
        t = (truth or {}).get(sid, (None, None, None))
        rows.append({"id": sid, "image": f"images/{sid}.png", "object": "cow", "box": [1, 2, 30, 40],
                     "group": f"g-{sid}", "scene": "farm", "boxed": False, "synthetic": synthetic,
                     "truth_location": SHORT[t[0]], "truth_size": SHORT[t[1]], "truth_co_occurrence": SHORT[t[2]]})
    return pd.DataFrame(rows)


def kept(table, ids, **cfg) -> dict[str, dict]:
    """Run the applied rule; returns {id: row} of kept samples."""
    res = build_consensus(table, manifest(ids), ConsensusConfig(**cfg))
    return {r["id"]: r for r in res.frame.to_dict("records")}


T3 = ["a", "b", "c"]


# --------------------------------------------------------------------------- rules


def test_unanimous_final_needs_every_teacher_and_the_same_final():
    t = answers(
        ("agree", "a", "ok", "OOII"), ("agree", "b", "ok", "OIOI"), ("agree", "c", "ok", "OOOI"),
        ("split", "a", "ok", "OOII"), ("split", "b", "ok", "IIII"), ("split", "c", "ok", "OOII"),
        ("missing", "a", "ok", "IIII"), ("missing", "b", "ok", "IIII"),
        ("unparseable", "a", "ok", "IIII"), ("unparseable", "b", "ok", "IIII"), ("unparseable", "c", "unparseable", "----"),
        ("failed", "a", "ok", "IIII"), ("failed", "b", "ok", "IIII"), ("failed", "c", "failed", "----"),
        ("nofinal", "a", "ok", "IIII"), ("nofinal", "b", "ok", "IIII"), ("nofinal", "c", "partial", "-III"),
    )
    ids = ["agree", "split", "missing", "unparseable", "failed", "nofinal"]
    k = kept(t, ids, rule="unanimous_final")
    assert set(k) == {"agree"}
    row = k["agree"]
    assert row["final"] == O
    # criteria: location split O,I,O -> no unanimous label; size I,O,O -> none; co-occurrence all I
    assert row["label_location"] is None and row["label_size"] is None and row["label_co_occurrence"] == I
    # the designated teacher (first by name) still supplies its own labels and sentences
    assert row["designated_location"] == O and row["analysis_location"] == "a on location of agree"


def test_unanimous_all_needs_every_criterion_too():
    t = answers(
        ("all", "a", "ok", "OOII"), ("all", "b", "ok", "OOII"), ("all", "c", "ok", "OOII"),
        ("finalonly", "a", "ok", "OOII"), ("finalonly", "b", "ok", "OIOI"), ("finalonly", "c", "ok", "OOII"),
        ("partial", "a", "ok", "OOII"), ("partial", "b", "partial", "OO-I"), ("partial", "c", "ok", "OOII"),
    )
    ids = ["all", "finalonly", "partial"]
    assert set(kept(t, ids, rule="unanimous_all")) == {"all"}
    assert set(kept(t, ids, rule="unanimous_final")) == {"all", "finalonly", "partial"}


def test_contradiction_answers_count_only_when_configured():
    t = answers(("s", "a", "ok", "OOII"), ("s", "b", "contradiction", "OIII"), ("s", "c", "ok", "OOII"))
    assert set(kept(t, ["s"])) == {"s"}
    assert kept(t, ["s"], contradiction_usable=False) == {}


def test_designated_uses_one_teacher_and_needs_the_others_to_have_answered():
    t = answers(
        ("others_unreadable", "a", "ok", "OOII"), ("others_unreadable", "b", "unparseable", "----"),
        ("others_unreadable", "c", "empty", "----"),
        ("disagree", "a", "ok", "IIII"), ("disagree", "b", "ok", "OOOO"), ("disagree", "c", "ok", "OOOO"),
        ("other_failed", "a", "ok", "OOII"), ("other_failed", "b", "failed", "----"), ("other_failed", "c", "ok", "OOII"),
        ("other_missing", "a", "ok", "OOII"), ("other_missing", "b", "ok", "OOII"),
        ("mine_unreadable", "a", "unparseable", "----"), ("mine_unreadable", "b", "ok", "OOII"),
        ("mine_unreadable", "c", "ok", "OOII"),
    )
    ids = ["others_unreadable", "disagree", "other_failed", "other_missing", "mine_unreadable"]
    k = kept(t, ids, rule="designated", designated="a")
    assert set(k) == {"others_unreadable", "disagree"}
    assert k["disagree"]["final"] == I and k["disagree"]["label_location"] == I  # a's labels, outvoted or not


def test_designated_criteria_is_the_authors_qwen_only_labels_criterion_by_criterion():
    """The authors' notebooks label each criterion with Qwen-72B's answer alone (the other teachers'
    agreement filters are commented out) on samples every teacher answered: a designated answer with
    criterion labels but no final decision still counts, and the others' disagreement does not matter."""
    t = answers(
        ("disagree", "a", "ok", "IIII"), ("disagree", "b", "ok", "OOOO"), ("disagree", "c", "ok", "OOOO"),
        ("no_final", "a", "partial", "-IO-"), ("no_final", "b", "ok", "IIII"), ("no_final", "c", "unparseable", "----"),
        ("other_failed", "a", "ok", "OOII"), ("other_failed", "b", "failed", "----"), ("other_failed", "c", "ok", "OOII"),
        ("mine_unreadable", "a", "unparseable", "----"), ("mine_unreadable", "b", "ok", "OOII"),
        ("mine_unreadable", "c", "ok", "OOII"),
    )
    ids = ["disagree", "no_final", "other_failed", "mine_unreadable"]
    k = kept(t, ids, rule="designated_criteria", designated="a")
    assert set(k) == {"disagree", "no_final"}
    assert [k["disagree"][f"label_{c}"] for c in ("location", "size", "co_occurrence")] == [I, I, I]
    assert pd.isna(k["no_final"]["final"])
    assert (k["no_final"]["label_location"], k["no_final"]["label_size"]) == (I, O)
    assert pd.isna(k["no_final"]["label_co_occurrence"])
    # the paper's rule keeps neither: the final decisions disagree, or one is missing
    assert set(kept(t, ids, rule="unanimous_final", designated="a")) == set()
    # the designated rule needs the designated teacher's final decision
    assert set(kept(t, ids, rule="designated", designated="a")) == {"disagree"}


def test_majority_more_than_half_of_all_teachers_ties_dropped():
    t = answers(
        ("two_one", "a", "ok", "IIII"), ("two_one", "b", "ok", "OOII"), ("two_one", "c", "ok", "OOIO"),
        ("tie_missing", "a", "ok", "IIII"), ("tie_missing", "b", "ok", "OOII"),
        ("two_missing", "a", "ok", "OOII"), ("two_missing", "b", "ok", "OOII"),
        ("one_only", "a", "ok", "OOII"),
        ("unreadable_tie", "a", "ok", "IIII"), ("unreadable_tie", "b", "ok", "OOII"), ("unreadable_tie", "c", "unparseable", "----"),
    )
    ids = ["two_one", "tie_missing", "two_missing", "one_only", "unreadable_tie"]
    k = kept(t, ids, rule="majority")
    assert set(k) == {"two_one", "two_missing"}
    row = k["two_one"]
    assert (row["final"], row["label_location"], row["label_size"], row["label_co_occurrence"]) == (O, O, I, I)


def test_majority_even_teacher_count_ties_are_dropped():
    t = answers(*[("tie", x, "ok", lab) for x, lab in zip("abcd", ["OOII", "OOII", "IIII", "IIII"])],
                *[("win", x, "ok", lab) for x, lab in zip("abcd", ["OOII", "OOII", "OOII", "IIII"])])
    assert set(kept(t, ["tie", "win"], rule="majority")) == {"win"}


def test_rule_functions_on_the_matrix_directly():
    t = answers(("s", "a", "ok", "OOII"), ("s", "b", "ok", "OOII"))
    m = answer_matrix(t, ["s", "nobody"], ["a", "b"], "a")
    keep, labels = apply_rule(m, "unanimous_all")
    assert keep.tolist() == [True, False]
    assert labels["final"].tolist() == [1, -1]
    with pytest.raises(ValueError, match="unknown consensus rule"):
        apply_rule(m, "plurality")


def test_teacher_selection_limits_who_votes():
    t = answers(("s", "a", "ok", "OOII"), ("s", "b", "ok", "OOII"), ("s", "c", "ok", "IIII"))
    assert kept(t, ["s"]) == {}
    assert set(kept(t, ["s"], teachers=["a", "b"])) == {"s"}


def test_input_errors_name_the_problem():
    t = answers(("s", "a", "ok", "OOII"), ("s", "b", "ok", "OOII"))
    with pytest.raises(ValueError, match="'zed'.*no answers"):
        build_consensus(t, manifest(["s"]), ConsensusConfig(teachers=["a", "zed"]))
    with pytest.raises(ValueError, match="designated teacher 'c'"):
        build_consensus(t, manifest(["s"]), ConsensusConfig(designated="c"))
    two_prompts = pd.concat([t, pd.DataFrame([answer("s", "a", "ok", "I", "I", "I", "I", prompt="p2")])])
    with pytest.raises(ValueError, match="2 different prompts"):
        build_consensus(two_prompts, manifest(["s"]), ConsensusConfig())
    res = build_consensus(two_prompts, manifest(["s"]), ConsensusConfig(prompt_hash="p1"))
    assert res.report["prompt_hash"] == "p1" and len(res.frame) == 1
    with pytest.raises(ValueError, match="repeats sample id"):
        build_consensus(t, manifest(["s", "s"]), ConsensusConfig())


# --------------------------------------------------------------------------- statistics


def test_fleiss_kappa_matches_the_textbook_example():
    # Fleiss (1971) style worked example: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
    counts = np.array([
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ])
    assert fleiss_kappa(counts) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_with_two_raters_is_scotts_pi():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2, 200)
    b = np.where(rng.random(200) < 0.8, a, 1 - a)
    po = (a == b).mean()
    pooled = np.concatenate([a, b]).mean()
    pe = pooled**2 + (1 - pooled) ** 2
    kappa, n = fleiss_from_codes(np.stack([a, b], axis=1).astype(np.int8))
    assert n == 200 and kappa == pytest.approx((po - pe) / (1 - pe))


def test_fleiss_and_cohen_skip_missing_and_undefined():
    codes = np.array([[1, 1, 1], [0, 0, -1], [0, 0, 0], [1, 0, 1]], dtype=np.int8)
    _, n = fleiss_from_codes(codes)
    assert n == 3
    assert fleiss_from_codes(np.array([[1, 1], [1, 1]], dtype=np.int8))[0] is None  # one category only
    assert cohen_kappa(np.array([1, 1, -1]), np.array([1, 1, 0])) == (None, 2)
    assert cohen_kappa(np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1])) == (1.0, 4)
    pairs = pairwise_cohen(codes, ["a", "b", "c"])
    assert [(p["a"], p["b"], p["n"]) for p in pairs] == [("a", "b", 4), ("a", "c", 3), ("b", "c", 3)]


def test_report_counts_failures_agreement_and_accuracy_before_and_after():
    # truth: s1 all in; s2 location out; s3 all in; s4 size out
    truth = {"s1": "III", "s2": "OII", "s3": "III", "s4": "IOI"}
    t = answers(
        ("s1", "a", "ok", "IIII"), ("s1", "b", "ok", "IIII"), ("s1", "c", "ok", "IIII"),
        ("s2", "a", "ok", "IIII"), ("s2", "b", "ok", "OOII"), ("s2", "c", "ok", "OOII"),  # a is wrong on s2
        ("s3", "a", "ok", "IIII"), ("s3", "b", "unparseable", "----"), ("s3", "c", "failed", "----"),
        ("s4", "a", "ok", "OIOI"), ("s4", "b", "ok", "OIOI"), ("s4", "c", "empty", "----"),
    )
    man = manifest(list(truth), truth={k: tuple(v) for k, v in truth.items()}, synthetic=True)
    res = build_consensus(t, man, ConsensusConfig(rule="unanimous_final", designated="a"))
    r = res.report
    assert r["synthetic"] is True and r["notice"] == SYNTHETIC_NOTICE
    assert r["kept_per_rule"]["unanimous_final"]["kept"] == 1  # only s1
    assert r["kept_per_rule"]["majority"]["kept"] == 3  # s1 (3 in), s2 and s4 (2 out each)
    assert r["kept_per_rule"]["designated"]["kept"] == 3  # s3 has a request failure from c
    st = r["teacher_status"]
    assert (st["b"]["parse_failures"], st["c"]["parse_failures"], st["c"]["request_failures"]) == (1, 1, 1)
    assert st["c"]["answers"] == 3 and st["c"]["usable"] == 2
    assert r["agreement"]["final"]["n"] == 2 and r["agreement"]["final"]["rate"] == 0.5
    before = r["accuracy"]["before"]
    assert before["teacher"] == "a"
    assert before["final"]["accuracy"] == pytest.approx(3 / 4) and before["final"]["n"] == 4
    assert before["location"]["accuracy"] == pytest.approx(3 / 4)
    after = r["accuracy"]["after"]
    assert after["unanimous_final"]["final"] == {"accuracy": 1.0, "n": 1, "coverage": 1.0}
    assert after["majority"]["final"]["accuracy"] == 1.0 and after["majority"]["final"]["n"] == 3
    titles = [t.title for t in report_tables(r)]
    assert any("accuracy vs truth" in x for x in titles)


def test_output_rows_carry_the_manifest_and_resolve_image_paths(tmp_path):
    t = answers(("s1", "a", "ok", "OOII"), ("s1", "b", "ok", "OOII"))
    res = build_consensus(t, manifest(["s1", "s2"]), ConsensusConfig(), image_root=tmp_path)
    row = res.frame.iloc[0]
    assert row["image"] == str(tmp_path.resolve() / "images" / "s1.png")
    assert list(row["box"]) == [1, 2, 30, 40] and row["group"] == "g-s1" and row["n_usable"] == 2
    assert res.report["samples"]["manifest"] == 2 and res.report["samples"]["answered_by_any"] == 1
    assert res.report["accuracy"] is None and res.report["notice"] is None


def test_derived_final_is_no_vote_by_default():
    """A teacher that wrote no final decision (the parser fused one from its three labels) does
    not make the final decision unanimous; its criterion labels still count."""
    from scenefit.teachers.parse import parse_teacher_answer
    from scenefit.teachers.store import parsed_fields

    written = ("Analysis:\nLocation: The cow floats in the sky.\nCo-occurrence: Cows are not found here.\n"
               "Size: The cow is as tall as the person.\nSummary:\nLocation: Out-of-context\n"
               "Co-occurrence: Out-of-context\nSize: In-context\nFinal decision: Out-of-context.")
    no_final = written.rsplit("Final", 1)[0]
    rows = []
    for teacher, raw in (("a", written), ("b", written), ("c", no_final)):
        row = answer("s1", teacher)
        row.update(parsed_fields(parse_teacher_answer(raw)))
        rows.append(row)
    table = pd.DataFrame(rows)
    assert table.loc[2, "final"] == O  # the parser did derive it ...
    assert kept(table, ["s1"]) == {}  # ... but it is no vote: not unanimous
    assert kept(table, ["s1"], rule="majority")["s1"]["final"] == O  # two written votes of three
    assert kept(table, ["s1"], count_derived_final=True)["s1"]["final"] == O
    res = build_consensus(table, manifest(["s1"]), ConsensusConfig())
    assert [res.report["teacher_status"][t]["derived_final"] for t in "abc"] == [0, 0, 1]
    assert res.report["agreement"]["location"]["rate"] == 1.0  # criterion labels still agree
    assert res.report["count_derived_final"] is False
    per_teacher = next(t for t in report_tables(res.report) if t.title == "Answers per teacher")
    column = next(c for c in per_teacher.columns if c.header == "derived finals")
    assert list(column.cells) == ["0", "0", "1"] and "no vote" in per_teacher.caption
