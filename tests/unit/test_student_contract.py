"""The student contract (scenefit.student) without models: both answer formats written and read
back, the typed ``scenefit_student.json`` and its older versions. With models (the shared fast
scorer and generation call, a reasoning-first Predictor): tests/e2e/test_student_contract_models.py.

    .venv/bin/python -m pytest tests/unit/test_student_contract.py -q
"""

from __future__ import annotations

import json

import pytest

from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.student.answer import AnswerFormat, parse_student_answer, render_student_answer
from scenefit.student.metadata import (
    STUDENT_META,
    StudentError,
    StudentMeta,
    read_student,
    read_student_meta,
    write_student_meta,
)

DF, RF = AnswerFormat.DECISION_FIRST, AnswerFormat.REASONING_FIRST

@pytest.mark.parametrize("fmt", [DF, RF])
@pytest.mark.parametrize("crit", CRITERIA)
@pytest.mark.parametrize("label", [Label.IN, Label.OUT])
def test_every_target_parses_back_to_its_label_and_sentence(fmt, crit, label):
    text = render_student_answer(crit, label, "  The cow  stands\n on the grass. ", fmt)
    parsed = parse_student_answer(text, crit, fmt)
    assert (parsed.label, parsed.analysis, parsed.status) == (label, "The cow stands on the grass.", "ok")

def test_reasoning_first_is_the_authors_target_exactly():
    """The authors' notebook writes 'Analysis:\n<Criterion>: <sentence>\n\nSummary:\nFinal decision: <label>'."""
    text = render_student_answer(Criterion.SIZE, Label.OUT, "The cat is larger than the car.", RF)
    assert text == "Analysis:\nSize: The cat is larger than the car.\n\nSummary:\nFinal decision: Out-of-context"


def test_reasoning_first_answers_of_the_earlier_layout_still_parse():
    earlier = "Analysis:\nSize: It is huge.\nSummary:\nSize: Out-of-context\nFinal decision: Out-of-context"
    assert parse_student_answer(earlier, Criterion.SIZE, RF).status == "ok"


@pytest.mark.parametrize("fmt", [DF, RF])
def test_the_decision_is_found_where_the_format_puts_it_never_in_the_analysis(fmt):
    """A sentence holding "decision: In ..." is no decision line: the format's prefix decides where the
    label is (its first line, or its last), and the regexes come from that prefix."""
    text = render_student_answer(Criterion.LOCATION, Label.OUT, "A hasty decision: In my view it floats.", fmt)
    offset = fmt.decision_offset(text)
    assert text[offset - len(fmt.decision_prefix):offset] == fmt.decision_prefix
    assert text[offset:].startswith(" Out-of-context")
    assert parse_student_answer(text, Criterion.LOCATION, fmt).label is Label.OUT
    assert fmt.decision_line.pattern.count(r"\s+") == len(fmt.decision_prefix.split()) - 1
    assert fmt.decision_offset("Location: no decision here.") is None

def test_each_format_reads_only_its_own_decision_line():
    rf = render_student_answer(Criterion.LOCATION, Label.OUT, "It floats.", RF)
    df = render_student_answer(Criterion.LOCATION, Label.OUT, "It floats.", DF)
    # a decision-first reader never takes "Final decision:" for its line, nor the reverse
    assert parse_student_answer(rf, Criterion.LOCATION, DF).label is None
    assert parse_student_answer(df, Criterion.LOCATION, RF).status == "no_decision"

@pytest.mark.parametrize("text, label, status", [
    ("Analysis:\nLocation: It floats.\nSummary:\nLocation: Out\nFinal decision: Out", Label.OUT, "ok"),
    ("Analysis:\nLocation: It stands on the grass.\nSummary:\nLocation: In-context", None, "no_decision"),
    ("Location: It floats.\nFinal decision: not in-context", None, "ambiguous_decision"),
    ("Location: It floats.\nFinal decision: yes", None, "ambiguous_decision"),
    ("Location: x.\nFinal decision: In-context\nFinal decision: Out-of-context", None, "ambiguous_decision"),
    ("Analysis:\nLocation: It floats.\nSummary:\nLocation: In-context\nFinal decision: Out-of-context",
     Label.OUT, "summary_disagrees"),
    ("Analysis: Location: It floats.\nSummary: Location: Out-of-context\nFinal decision: Out-of-context",
     Label.OUT, "ok"),
    ("Final decision: In-context", Label.IN, "no_analysis"),
])
def test_reasoning_first_parser_never_guesses(text, label, status):
    parsed = parse_student_answer(text, Criterion.LOCATION, RF)
    assert (parsed.label, parsed.status) == (label, status)
    if status == "ok":
        assert parsed.analysis == "It floats."

def test_unknown_answer_format_is_a_clear_error():
    with pytest.raises(ValueError, match="answer_format 'thinking_first'"):
        AnswerFormat.parse("thinking_first")
    assert AnswerFormat.parse(None) is DF and AnswerFormat.parse("reasoning-first") is RF

def test_datasets_config_takes_the_setting():
    from scenefit.core.config import resolve

    assert resolve("datasets").answer_format is DF  # the default stays decision-first
    assert resolve("datasets", overrides={"answer_format": "reasoning_first"}).answer_format is RF
    with pytest.raises(Exception, match="answer_format"):
        resolve("datasets", overrides={"answer_format": "bogus"})

def _adapter_folder(path, meta: dict | None):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "base_model_name_or_path": "base"}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if meta is not None:
        (path / STUDENT_META).write_text(json.dumps(meta))
    return path

def test_metadata_round_trips_and_keeps_unknown_keys(tmp_path):
    meta = StudentMeta(criterion="Co-occurrence", base_model="b", answer_format="reasoning_first",
                       decision_prefix="Final decision:", synthetic=True)
    write_student_meta(meta, tmp_path)
    back = read_student_meta(tmp_path)
    assert back == meta and back.criterion == "co_occurrence" and back.answer_format is RF
    raw = json.loads((tmp_path / STUDENT_META).read_text())
    raw["from_a_newer_version"] = 1
    (tmp_path / STUDENT_META).write_text(json.dumps(raw))
    assert read_student_meta(tmp_path).model_extra == {"from_a_newer_version": 1}

def test_older_students_are_decision_first_and_bad_files_name_themselves(tmp_path):
    old = _adapter_folder(tmp_path / "old", {"criterion": "size", "base_model": "b", "decision_prefix": "Decision:"})
    info = read_student(old)
    assert info.answer_format is DF and info.criterion is Criterion.SIZE and not info.synthetic
    bad = _adapter_folder(tmp_path / "bad", {"criterion": "size", "answer_format": "sideways"})
    with pytest.raises(StudentError, match=f"{bad / STUDENT_META}.*answer_format"):
        read_student(bad)
    mixed = _adapter_folder(tmp_path / "mixed", {"criterion": "size", "answer_format": "reasoning_first",
                                                  "decision_prefix": "Decision:"})
    with pytest.raises(StudentError, match="reasoning_first students decide after 'Final decision:'"):
        read_student(mixed)
    none = _adapter_folder(tmp_path / "location", None)  # no metadata: refused, never served with guessed defaults
    with pytest.raises(StudentError, match=f"{none}: no {STUDENT_META}.*\\{{\"criterion\": \"location\"\\}}"):
        read_student(none)



def test_a_decision_is_written_only_when_its_token_is_the_argmax():
    """The fast path ranks the two labels' first tokens; `written` says whether the student would
    write the label it picks (its argmax over the whole vocabulary) — an early checkpoint that
    ranks " In" above " Out" but writes a line break there is unreadable for training's eval."""
    import torch

    from scenefit.student.decision import two_way, written

    first = {Label.IN: 3, Label.OUT: 5}
    logits = torch.full((3, 8), -5.0)
    logits[0, 3], logits[0, 5] = 4.0, 1.0             # writes " In"
    logits[1, 3], logits[1, 5], logits[1, 7] = 1.0, 2.0, 9.0  # ranks Out above In, writes token 7
    logits[2, 3], logits[2, 5] = 0.0, 6.0             # writes " Out"
    p_out, labels = two_way(logits, first)
    assert labels == [Label.IN, Label.OUT, Label.OUT] and p_out[1] > 0.5
    assert written(logits, first, labels) == [True, False, True]
