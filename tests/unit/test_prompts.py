"""The teacher prompt versions: v2 carries every instruction of issue #16 item 1 (design,
"The authors' prompts, as facts") and all of v1, its worked examples are answers the parser
reads back exactly, and v1 stays selectable unchanged.

    .venv/bin/python -m pytest tests/unit/test_prompts.py -q
"""

from __future__ import annotations

import json
import re

import pytest

from scenefit.core.criteria import CRITERIA, TEACHER_ORDER, Criterion, Label
from scenefit.prompts import DEFAULT_TEACHER_PROMPT, PromptTemplate, render_teacher_answer, teacher_prompt
from scenefit.teachers.parse import parse_teacher_answer

V2 = teacher_prompt(version="v2").render("zebra")

# One phrase per instruction of the authors' prompt (design, points 1-5), as v2 words it.
INSTRUCTIONS = {
    "names the object in the red box": "one object, a zebra, is marked with a red bounding box",
    "object taken as really there": "Take the zebra as really being there",
    "rendering is no reason": "image quality is not part of the question, and it is never a reason for Out-of-context",
    "location: support, floating, embedded": "Floating in the air, stuck inside another object",
    "co-occurrence: unusual combination": "An unusual or uncommon combination makes it Out-of-context",
    "size: banana and chair": "A banana larger than a chair, or a cat larger than a car",
    "one criterion decides": "out of context as a whole if it is out of context on any one criterion",
    "unusual, not impossible": '"unusual or uncommon", not "impossible"',
    "criteria independent": "Judge each criterion by itself",
    "summary agrees with analysis": "Each Summary label must match your own analysis sentence",
    "never another category": "Do not judge it as some other",
    "analysis first, decision last": "analysis first and decision last",
    "two worked examples": "Two worked examples",
}


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(INSTRUCTIONS))
def test_v2_carries_every_instruction(name):
    assert _flat(INSTRUCTIONS[name]) in _flat(V2), name


def test_v2_is_the_default_and_v1_is_kept_unchanged():
    assert DEFAULT_TEACHER_PROMPT == "v2" and teacher_prompt().hash == teacher_prompt(version="v2").hash
    v1 = teacher_prompt(version="v1")
    assert v1.name == "teacher_v1" and v1.hash == "442d43f78c7e"  # answers stored under v1 stay matched
    assert teacher_prompt(version="v1", variant="json").hash == "3a3ab3db4848"


@pytest.mark.parametrize("variant", ["text", "json"])
def test_v2_is_a_superset_of_v1(variant):
    """v1's answer format (text) or answer keys (JSON) and its fusion rule appear word for word in v2."""
    v1 = _flat(teacher_prompt(version="v1", variant=variant).text)
    v2 = _flat(teacher_prompt(version="v2", variant=variant).text)
    if variant == "text":
        assert _flat(v1[v1.index("Analysis: Location:"):]) in v2
    else:
        assert v1[v1.index("- \"analysis\""):] in v2
    assert "The {object} is out of context as a whole if it is out of context on any one criterion." in v2
    assert "in the air only if it can fly" in v2


@pytest.mark.parametrize("variant", ["text", "json"])
def test_criteria_come_in_the_authors_order(variant):
    text = teacher_prompt(variant=variant).text
    words = {Criterion.LOCATION: "Location", Criterion.CO_OCCURRENCE: "Co-occurrence", Criterion.SIZE: "Size"}
    if variant == "json":
        words = {c: f'"{c.value}"' for c in CRITERIA}
    positions = [text.index(words[c]) for c in TEACHER_ORDER]
    assert positions == sorted(positions)
    # the format template (text) lists the criteria in that order in both blocks
    if variant == "text":
        keys = re.findall(r"^(Location|Co-occurrence|Size):", text, re.MULTILINE)
        assert keys[:6] == ["Location", "Co-occurrence", "Size"] * 2


@pytest.mark.parametrize("variant", ["text", "json"])
def test_worked_examples_parse_back_to_their_labels(variant):
    """Each example is a complete answer: the parser reads its three labels, three sentences and
    final decision; one is out of context on location and co-occurrence, one in context on all."""
    from importlib import resources

    stored = json.loads((resources.files("scenefit") / "prompts" / "teacher_v2_examples.json").read_text())
    text = teacher_prompt(variant=variant).text
    blocks = re.split(r"^Example \d+, [^\n]*:\n", text, flags=re.MULTILINE)[1:]
    assert len(blocks) == len(stored) == 2
    labels_seen = []
    for block, ex in zip(blocks, stored):
        p = parse_teacher_answer(block.strip())
        want = {Criterion(k): Label(v) for k, v in ex["summary"].items()}
        assert p.status == "ok" and p.labels == want and not p.final_derived, p.reason
        assert p.analyses == {Criterion(k): v for k, v in ex["analysis"].items()}
        labels_seen.append(p.labels)
    assert labels_seen[0] == {Criterion.LOCATION: Label.OUT, Criterion.CO_OCCURRENCE: Label.OUT, Criterion.SIZE: Label.IN}
    assert set(labels_seen[1].values()) == {Label.IN}


def test_render_teacher_answer_rejects_an_unknown_variant():
    labels = {c: Label.IN for c in CRITERIA}
    with pytest.raises(ValueError, match="unknown answer variant 'yaml'"):
        render_teacher_answer({c: "x" for c in CRITERIA}, labels, "yaml")


def test_unknown_version_and_placeholders_are_named():
    with pytest.raises(ValueError, match="unknown teacher prompt version 'v9'"):
        teacher_prompt(version="v9")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['obj'\]"):
        PromptTemplate.from_text("mine", "Is the {object} next to the {obj} in context?")
    # JSON braces in a user's prompt are no placeholder
    assert PromptTemplate.from_text("mine", 'Is the {object} fine? Reply {"final_decision": ...}').render("cow")


def test_prompt_file_wins_over_the_version(tmp_path):
    mine = tmp_path / "authors.txt"
    mine.write_text("The exact text of someone's prompt about the {object}.")
    p = teacher_prompt(mine, version="v1")
    assert p.name == "authors" and p.render("cow") == "The exact text of someone's prompt about the cow."
