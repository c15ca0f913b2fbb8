"""Teacher answer parser over a corpus of answer variants: every deviation of design §2.

    .venv/bin/python -m pytest tests/unit/test_parse.py -q
"""

from __future__ import annotations

import json

import pytest

from scenefit.core.criteria import Criterion, Label
from scenefit.teachers.parse import parse_teacher_answer, teacher_json_schema

IN, OUT = Label.IN, Label.OUT
L, S, C = Criterion.LOCATION, Criterion.SIZE, Criterion.CO_OCCURRENCE

CANONICAL = """Analysis:
Location: The horse stands on the tiled floor between two urinals.
Co-occurrence: Horses are not found in public bathrooms.
Size: The horse is about as tall as the stall doors.
Summary:
Location: In-context
Co-occurrence: Out-of-context
Size: In-context
Final decision: Out-of-context."""

EXPECTED_LABELS = {L: IN, C: OUT, S: IN}


def check_full(p, final=OUT, labels=EXPECTED_LABELS):
    assert p.labels == labels
    assert p.final is final
    for c in Criterion:
        assert p.analyses[c], f"missing analysis for {c}"


def test_canonical_answer_is_ok_with_sentences():
    p = parse_teacher_answer(CANONICAL)
    check_full(p)
    assert p.status == "ok" and p.reason is None
    assert p.analyses[L] == "The horse stands on the tiled floor between two urinals."
    assert p.analyses[C] == "Horses are not found in public bathrooms."


# (name, text) pairs that must all parse to the canonical labels, final and three analyses.
VARIANTS = {
    "markdown_bold": CANONICAL.replace("Location:", "**Location:**").replace("Size:", "**Size**:")
    .replace("Co-occurrence:", "**Co-occurrence:**").replace("Analysis:", "**Analysis:**")
    .replace("Summary:", "**Summary:**").replace("Final decision: Out-of-context.", "**Final decision:** **Out-of-context.**"),
    "bullets": "\n".join(
        ("- " + ln if ln.split(":")[0] in ("Location", "Size", "Co-occurrence") else ln) for ln in CANONICAL.splitlines()
    ),
    "star_and_numbered_bullets": CANONICAL.replace("Location: The", "1. Location: The").replace("Co-occurrence: Horses", "2. Co-occurrence: Horses")
    .replace("Size: The", "3. Size: The").replace("Location: In-context", "* Location: In-context")
    .replace("Size: In-context", "• Size: In-context"),
    "lower_case": CANONICAL.lower(),
    "upper_case_labels": CANONICAL.replace("In-context", "IN-CONTEXT").replace("Out-of-context", "OUT-OF-CONTEXT"),
    "missing_period": CANONICAL.rstrip("."),
    "spaces_instead_of_hyphens": CANONICAL.replace("In-context", "in context").replace("Out-of-context", "out of context"),
    "extra_prose": "Sure! Let me look at the image carefully.\n\n" + CANONICAL + "\n\nI hope this helps. Let me know if you need more.",
    "reordered_sections": CANONICAL.split("Summary:")[0].join(["Summary:" + CANONICAL.split("Summary:")[1].rsplit("Final", 1)[0], ""])
    + "Final decision: Out-of-context.",
    "reordered_criteria": """Analysis:
Size: The horse is about as tall as the stall doors.
Location: The horse stands on the tiled floor between two urinals.
Co-occurrence: Horses are not found in public bathrooms.
Summary:
Size: In-context
Co-occurrence: Out-of-context
Location: In-context
Final decision: Out-of-context""",
    "markdown_headings": CANONICAL.replace("Analysis:", "### Analysis").replace("Summary:", "## Summary"),
    "cooccurrence_spellings": CANONICAL.replace("Co-occurrence: Horses", "Cooccurrence: Horses").replace(
        "Co-occurrence: Out", "co occurrence: Out"),
    "crlf_and_indent": "\r\n".join("   " + ln for ln in CANONICAL.splitlines()),
    "blank_lines": CANONICAL.replace("\n", "\n\n"),
    "final_answer_wording": CANONICAL.replace("Final decision:", "Final answer:"),
    "json_plain": json.dumps({
        "analysis": {"location": "The horse stands on the tiled floor.", "co_occurrence": "Horses are not found in bathrooms.",
                     "size": "About as tall as the stall doors."},
        "summary": {"location": "In-context", "co_occurrence": "Out-of-context", "size": "In-context"},
        "final_decision": "Out-of-context",
    }),
    "json_fenced_with_prose": "Here is my answer:\n```json\n" + json.dumps({
        "Analysis": {"Location": "On the floor.", "Co-occurrence": "Not in bathrooms.", "Size": "Plausible height."},
        "Summary": {"Location": "in context", "Co-occurrence": "out of context", "Size": "IN-CONTEXT"},
        "Final decision": "Out-of-context.",
    }, indent=2) + "\n```\nDone.",
    "json_per_criterion_objects": json.dumps({
        "location": {"analysis": "On the floor.", "label": "In-context"},
        "co_occurrence": {"analysis": "Not in bathrooms.", "label": "Out-of-context"},
        "size": {"analysis": "Plausible height.", "label": "In-context"},
        "final": "Out-of-context",
    }),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_reads_like_canonical(name):
    p = parse_teacher_answer(VARIANTS[name])
    check_full(p)
    assert p.status == "ok", (name, p.reason)


def test_inline_summary_on_one_line():
    text = CANONICAL.split("Summary:")[0] + "Summary: Location: In-context, Co-occurrence: Out-of-context, Size: In-context\nFinal decision: Out-of-context"
    p = parse_teacher_answer(text)
    check_full(p)
    assert p.status == "ok"


def test_label_with_explanation_and_no_sections():
    text = (
        "Location: In-context - the horse stands on the floor.\n"
        "Co-occurrence: Out-of-context - horses do not belong in bathrooms.\n"
        "Size: In-context - it is as tall as the stall doors.\n"
        "Final decision: Out-of-context"
    )
    p = parse_teacher_answer(text)
    check_full(p)
    assert p.analyses[C] == "horses do not belong in bathrooms."


def test_analysis_mentioning_context_words_is_not_a_label():
    text = CANONICAL.replace("Horses are not found in public bathrooms.", "The horse is out of context among urinals.")
    p = parse_teacher_answer(text)
    assert p.labels[C] is OUT and p.analyses[C] == "The horse is out of context among urinals."
    assert p.status == "ok"


def test_missing_final_is_derived_and_said():
    text = CANONICAL.rsplit("Final", 1)[0]
    p = parse_teacher_answer(text)
    check_full(p)
    assert p.status == "ok"
    assert "derived" in p.reason


def test_missing_final_all_in_derives_in():
    text = CANONICAL.replace("Co-occurrence: Out-of-context", "Co-occurrence: In-context").rsplit("Final", 1)[0]
    p = parse_teacher_answer(text)
    assert p.final is IN and "derived" in p.reason


def test_missing_summary_line_is_partial_and_named():
    text = CANONICAL.replace("Size: In-context\n", "")
    p = parse_teacher_answer(text)
    assert p.labels == {L: IN, C: OUT, S: None}
    assert p.final is OUT
    assert p.status == "partial" and "no label for size" in p.reason


def test_missing_analysis_line_is_partial_and_named():
    text = CANONICAL.replace("Location: The horse stands on the tiled floor between two urinals.\n", "")
    p = parse_teacher_answer(text)
    assert p.labels == EXPECTED_LABELS and p.analyses[L] is None
    assert p.status == "partial" and "no analysis for location" in p.reason


def test_missing_label_and_final_keeps_what_was_read():
    text = CANONICAL.replace("Size: In-context\n", "").rsplit("Final", 1)[0]
    p = parse_teacher_answer(text)
    assert p.final is None and p.labels[C] is OUT
    assert p.status == "partial" and "no final decision" in p.reason


def test_contradiction_out_criterion_but_final_in():
    p = parse_teacher_answer(CANONICAL.replace("Final decision: Out-of-context.", "Final decision: In-context."))
    assert p.status == "contradiction"
    assert p.labels == EXPECTED_LABELS  # labels kept
    assert p.final is IN and "co_occurrence" in p.reason


def test_contradiction_all_in_but_final_out():
    text = CANONICAL.replace("Co-occurrence: Out-of-context", "Co-occurrence: In-context")
    p = parse_teacher_answer(text)
    assert p.status == "contradiction"
    assert p.labels == {L: IN, C: IN, S: IN} and p.final is OUT


def test_partial_labels_with_final_out_is_not_a_contradiction():
    text = CANONICAL.replace("Co-occurrence: Out-of-context\n", "")
    p = parse_teacher_answer(text)
    assert p.status == "partial"


def test_conflicting_labels_for_one_criterion_are_unknown_not_guessed():
    text = CANONICAL.replace("Size: In-context", "Size: In-context\nSize: Out-of-context")
    p = parse_teacher_answer(text)
    assert p.labels[S] is None
    assert p.status == "partial" and "conflicting labels for size" in p.reason


def test_disagreeing_final_lines():
    p = parse_teacher_answer(CANONICAL + "\nFinal decision: In-context")
    assert p.final is None and "disagree" in p.reason and p.status == "partial"


@pytest.mark.parametrize("text", ["", "   \n\t ", None])
def test_empty(text):
    p = parse_teacher_answer(text)
    assert p.status == "empty" and p.reason


@pytest.mark.parametrize("text", [
    "I'm sorry, I can't help with that.",
    "The image shows a bathroom with a horse.",
    "{\"note\": \"nothing useful\"}",
    "Final decision: maybe",
])
def test_unparseable_has_status_and_reason(text):
    p = parse_teacher_answer(text)
    assert p.status == "unparseable"
    assert p.reason
    assert p.final is None and all(v is None for v in p.labels.values())


def test_prose_with_final_decision_only():
    p = parse_teacher_answer("The horse looks odd in a bathroom. Final decision: Out-of-context.")
    assert p.final is OUT and p.status == "partial" and "no label for" in p.reason


def test_broken_json_falls_back_to_text():
    text = '{"analysis": {"location": "floor"  <- cut off\nLocation: In-context\nSize: In-context\nCo-occurrence: In-context\nFinal decision: In-context'
    p = parse_teacher_answer(text)
    assert p.labels == {L: IN, S: IN, C: IN} and p.final is IN


def test_to_json_shape_and_roundtrip():
    d = parse_teacher_answer(CANONICAL).to_json()
    assert set(d) == {"labels", "analyses", "final", "final_derived", "status", "reason"}
    assert d["final_derived"] is False
    assert d["labels"] == {"location": "In-context", "size": "In-context", "co_occurrence": "Out-of-context"}
    assert set(d["analyses"]) == {"location", "size", "co_occurrence"}
    assert d["final"] == "Out-of-context" and d["status"] == "ok"
    json.dumps(d)


def test_json_schema_accepts_a_schema_conforming_answer():
    schema = teacher_json_schema()
    assert schema["required"] == ["analysis", "summary", "final_decision"]
    assert set(schema["properties"]["summary"]["properties"]) == {"location", "size", "co_occurrence"}
    assert schema["properties"]["final_decision"]["enum"] == ["In-context", "Out-of-context"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_packaged_prompts_describe_the_parsed_format(version):
    """The text prompt's answer template and the JSON prompt's keys are what the parser reads."""
    from scenefit.prompts import teacher_prompt

    text = teacher_prompt(version=version).render("zebra")
    assert "Final decision:" in text and "Summary:" in text and "zebra" in text and "{object}" not in text
    jtext = teacher_prompt(variant="json", version=version).render("zebra")
    for key in ("analysis", "summary", "final_decision", "co_occurrence"):
        assert f'"{key}"' in jtext
    assert teacher_prompt(variant="json", version=version).hash != teacher_prompt(version=version).hash


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_echoed_template_is_not_an_answer(version):
    """A model that repeats the prompt's answer template has answered nothing."""
    from scenefit.prompts import teacher_prompt

    text = teacher_prompt(version=version).render("zebra")
    template = text.split("Write your answer exactly in this format")[1].split("Two worked examples")[0]
    p = parse_teacher_answer(template)
    assert all(v is None for v in p.labels.values()) and p.final is None
    assert p.status == "unparseable"
    inline = parse_teacher_answer("Summary: Location: In-context or Out-of-context, Size: In-context or Out-of-context")
    assert all(v is None for v in inline.labels.values())


def test_negated_label_is_not_read_as_its_opposite():
    text = CANONICAL.replace("Size: In-context", "Size: not in context")
    p = parse_teacher_answer(text)
    assert p.labels[S] is None and "size summary" in p.reason and p.status == "partial"


# --- issue 16 item 6: answers a hidden corpus of real-looking teacher answers tripped on ---------

@pytest.mark.parametrize("line, final", [
    ("Final decision: Out", OUT), ("Final decision: out.", OUT), ("**Final decision:** In", IN),
    ("Final decision - IN!", IN), ("final answer: out", OUT),
])
def test_bare_in_or_out_after_final_decision_is_a_label(line, final):
    p = parse_teacher_answer(CANONICAL.rsplit("Final", 1)[0] + line)
    assert p.final is final and not p.final_derived
    assert "derived" not in (p.reason or "")


def test_bare_in_opening_a_sentence_after_final_decision_is_not_a_label():
    p = parse_teacher_answer(CANONICAL.rsplit("Final", 1)[0] + "Final decision: In the end I cannot tell.")
    assert "final decision line names no label" in p.reason
    assert p.final is OUT and p.final_derived  # derived from the labels, and marked so


def test_label_opening_an_analysis_line_never_overrides_the_summary():
    text = CANONICAL.replace("Location: The horse stands", "Location: Out-of-context - the horse stands")
    p = parse_teacher_answer(text)
    assert p.labels == EXPECTED_LABELS  # the Summary's In-context stands
    assert p.status == "ok" and p.reason is None
    assert p.analyses[L] == "the horse stands on the tiled floor between two urinals."


def test_label_words_opening_an_analysis_sentence_are_read_as_the_sentence():
    sentence = "In context of a bathroom, a horse is a strange sight."
    p = parse_teacher_answer(CANONICAL.replace("Horses are not found in public bathrooms.", sentence))
    assert p.labels == EXPECTED_LABELS and p.status == "ok"
    assert p.analyses[C] == sentence


def test_label_inside_a_prose_analysis_line_never_conflicts_with_the_summary():
    text = CANONICAL.replace("Summary:", "Overall the horse's size: out of context, I first thought.\nSummary:")
    p = parse_teacher_answer(text)
    assert p.labels[S] is IN and p.status == "ok"
    assert "conflict" not in (p.reason or "")


def test_analysis_labels_count_when_no_summary_states_one():
    text = ("Analysis:\nLocation: In-context - the horse stands on the floor.\n"
            "Co-occurrence: Out-of-context - horses do not belong in bathrooms.\n"
            "Size: In-context - it is as tall as the stall doors.\nFinal decision: Out-of-context.")
    p = parse_teacher_answer(text)
    check_full(p)
    assert p.status == "ok"


def test_two_stated_labels_still_conflict():
    text = CANONICAL.replace("Location: In-context", "Location: In-context\nLocation: Out-of-context")
    p = parse_teacher_answer(text)
    assert p.labels[L] is None and "conflicting labels for location" in p.reason


def test_derived_final_is_marked_and_written_final_is_not():
    derived = parse_teacher_answer(CANONICAL.rsplit("Final", 1)[0])
    assert derived.final is OUT and derived.final_derived and derived.to_json()["final_derived"] is True
    from scenefit.teachers.parse import final_was_derived

    assert final_was_derived(derived.reason)
    written = parse_teacher_answer(CANONICAL)
    assert not written.final_derived and not final_was_derived(written.reason)


@pytest.mark.parametrize("word", ["Yes", "no", "YES.", "No"])
def test_bare_yes_or_no_is_never_a_label(word):
    text = ("Analysis:\nLocation: The horse stands on the floor.\nCo-occurrence: Horses are rare here.\n"
            f"Size: Normal.\nSummary:\nLocation: {word}\nCo-occurrence: {word}\nSize: {word}\nFinal decision: {word}")
    p = parse_teacher_answer(text)
    assert all(v is None for v in p.labels.values()) and p.final is None
    assert p.status == "unparseable"
    j = parse_teacher_answer(json.dumps({"summary": {"location": word, "size": word, "co_occurrence": word},
                                         "final_decision": word}))
    assert all(v is None for v in j.labels.values()) and j.final is None


@pytest.mark.parametrize("text", ["not in-context", "Not in context.", "isn't out of context", "never in-context"])
def test_negated_label_is_no_label(text):
    assert Label.parse(text) is None


@pytest.mark.parametrize("text, label", [
    ("In-context", IN), ("out of context", OUT), ("Out", OUT), ("in.", IN),
    ("Out-of-context: it is not in a plausible spot", OUT),  # a later "not in a ..." negates no label
])
def test_loose_labels_still_read(text, label):
    assert Label.parse(text) is label


@pytest.mark.parametrize("decision", ["not in-context", "Not in context", "not out-of-context"])
def test_student_parser_reads_negated_decision_as_no_label(decision):
    from scenefit.student.answer import parse_student_answer

    ans = parse_student_answer(f"Decision: {decision}\nLocation: The cow floats in the sky.", L)
    assert ans.label is None and ans.status == "ambiguous_decision"
    assert ans.analysis == "The cow floats in the sky."
    ok = parse_student_answer("Decision: Out-of-context\nLocation: The cow is not in a field.", L)
    assert ok.label is OUT and ok.status == "ok"


@pytest.mark.parametrize("line", ["Final decision: Out, since the horse is in a bathroom.",
                                  "Final decision: OUT - co-occurrence fails."])
def test_bare_out_followed_by_punctuation_and_reasons_is_a_label(line):
    p = parse_teacher_answer(CANONICAL.rsplit("Final", 1)[0] + line)
    assert p.final is OUT and not p.final_derived


def test_bare_labels_without_any_header_are_labels():
    text = ("Location: The horse stands on the tiled floor.\nCo-occurrence: Horses are not found in bathrooms.\n"
            "Size: About as tall as the stall doors.\nLocation: In\nCo-occurrence: Out\nSize: In\nFinal decision: Out")
    p = parse_teacher_answer(text)
    check_full(p)
    assert p.status == "ok", p.reason


def test_explanation_after_the_summary_is_analysis_not_a_second_label():
    text = CANONICAL + "\nExplanation:\nLocation: Out of context as the floor of a bathroom is no place for a horse."
    p = parse_teacher_answer(text)
    assert p.labels == EXPECTED_LABELS and p.status == "ok", p.reason
