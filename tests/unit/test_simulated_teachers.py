"""Simulated teachers: format, error and style-noise rates against their configuration,
determinism, analyses that describe what is drawn, and the project's parser reading them.

    .venv/bin/python -m pytest tests/unit/test_simulated_teachers.py -q
"""

from __future__ import annotations

import math
import re

import pytest

from scenefit.core.criteria import CRITERIA, Criterion, Label, fuse
from scenefit.core.records import Sample
from scenefit.testbed.catalog import SCENES
from scenefit.testbed.personas import (
    DESIGNATED,
    PERSONAS,
    TEACHER_ORDER,
    PersonaConfig,
    SimulatedTeacher,
    StyleNoise,
    load_layouts,
)
from scenefit.testbed.world import WorldConfig, generate_world, iter_layouts, layout_sample

N = 600
KEYS = {"location": Criterion.LOCATION, "co-occurrence": Criterion.CO_OCCURRENCE, "size": Criterion.SIZE}
LINE = re.compile(r"^\s*(?:[-*•]\s+)?(?:\*\*)?(location|co-occurrence|size|final decision)\s*:(?:\*\*)?\s*(.*)$",
                  re.IGNORECASE)


@pytest.fixture(scope="module")
def world() -> list[tuple[Sample, dict]]:
    cfg = WorldConfig(n=N, seed=21, violation_rates={"location": 0.4, "size": 0.4, "co_occurrence": 0.4})
    return [(layout_sample(lay, f"images/{lay['id']}.png"), lay) for lay, _ in iter_layouts(cfg)]


def read(text: str) -> dict:
    """A deliberately simple reading of one answer (the robust parser is scenefit.teachers.parse)."""
    analysis, summary, final, section = {}, {}, None, None
    for line in text.splitlines():
        stripped = line.strip().strip("*").lower()
        if stripped.startswith("analysis:"):
            section = "analysis"
            continue
        if stripped.startswith("summary:"):
            section = "summary"
            continue
        m = LINE.match(line)
        if not m:
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        if key == "final decision":
            final = value
        elif section == "analysis":
            analysis[KEYS[key]] = value
        else:
            summary[KEYS[key]] = Label.parse(value)
    return {"analysis": analysis, "summary": summary, "final": final}


def quiet(name: str = "exact", errors: float = 0.0) -> SimulatedTeacher:
    return SimulatedTeacher(PersonaConfig(name=name, model_id="test", error_rates={c.value: errors for c in CRITERIA}))


def assert_rate(observed: int, n: int, p: float, what: str) -> None:
    tol = max(0.025, 4 * math.sqrt(p * (1 - p) / n))
    assert abs(observed / n - p) <= tol, f"{what}: {observed}/{n} = {observed / n:.3f}, configured {p}"


def test_exact_format_without_noise(world):
    teacher = quiet()
    for sample, lay in world[:50]:
        lines = teacher.answer(sample, lay).splitlines()
        assert lines[0] == "Analysis:" and lines[4] == "Summary:" and len(lines) == 9
        assert [line.split(":")[0] for line in lines[1:4]] == [c.display for c in TEACHER_ORDER]
        assert lines[5:8] == [f"{c.display}: {sample.truth[c].value}" for c in TEACHER_ORDER]
        assert lines[8] == f"Final decision: {sample.final_truth.value}."
        assert all(line.endswith(".") for line in lines[1:4])


@pytest.mark.parametrize("persona", list(PERSONAS))
def test_error_and_style_rates_match_configuration(world, persona):
    p = PERSONAS[persona]
    teacher = SimulatedTeacher(persona)
    counts = dict.fromkeys(["bold", "bullets", "lowercase", "no_final_period", "dropped_line", "reordered",
                            "extra_prose", "with_final"], 0)
    wrong = dict.fromkeys(CRITERIA, 0)
    seen = dict.fromkeys(CRITERIA, 0)
    for sample, lay in world:
        text = teacher.answer(sample, lay)
        r = read(text)
        lines = [x for x in text.splitlines() if x.strip()]
        counts["bold"] += "**" in text
        counts["bullets"] += any(re.match(r"^(- |\* |• )", x) for x in lines)
        counts["lowercase"] += text == text.lower()
        counts["dropped_line"] += len(r["analysis"]) + len(r["summary"]) + (r["final"] is not None) < 7
        if r["final"] is not None:
            counts["with_final"] += 1
            counts["no_final_period"] += not r["final"].endswith(".")
        order = [KEYS[m.group(1).lower()] for x in lines if (m := LINE.match(x)) and m.group(1).lower() in KEYS]
        counts["reordered"] += len(order) >= 4 and order != _as_in(order, TEACHER_ORDER)
        counts["extra_prose"] += not LINE.match(lines[-1]) or not lines[0].strip("*").lower().startswith("analysis")
        for c in CRITERIA:
            if r["summary"].get(c) is not None:
                seen[c] += 1
                wrong[c] += r["summary"][c] is not sample.truth[c]
    s = p.style
    assert_rate(counts["bold"], N, s.bold, f"{persona} bold")
    assert_rate(counts["bullets"], N, s.bullets, f"{persona} bullets")
    assert_rate(counts["lowercase"], N, s.lowercase, f"{persona} lower case")
    assert_rate(counts["dropped_line"], N, s.dropped_line, f"{persona} dropped line")
    assert_rate(counts["extra_prose"], N, s.extra_prose, f"{persona} extra prose")
    assert_rate(counts["no_final_period"], counts["with_final"], s.no_final_period, f"{persona} no final period")
    # A dropped line can hide a reordering; allow for it on top of the tolerance.
    assert_rate(counts["reordered"], N, s.reordered * (1 - s.dropped_line / 2), f"{persona} reordered")
    for c in CRITERIA:
        assert_rate(wrong[c], seen[c], p.error_rate(c), f"{persona} {c.value} error")


def _as_in(order: list[Criterion], canonical: tuple[Criterion, ...]) -> list[Criterion]:
    """``order`` rearranged section by section into the canonical order (a section ends when a key repeats)."""
    out, section = [], []
    for c in order:
        if c in section:
            out += sorted(section, key=canonical.index)
            section = []
        section.append(c)
    return out + sorted(section, key=canonical.index)


def test_personas_differ_and_the_designated_teacher_errs_least():
    assert DESIGNATED in PERSONAS and len(PERSONAS) >= 3
    designated = PERSONAS[DESIGNATED]
    for name, p in PERSONAS.items():
        if name != DESIGNATED:
            assert all(p.error_rate(c) > designated.error_rate(c) for c in CRITERIA)
    assert len({p.seed for p in PERSONAS.values()}) == len(PERSONAS)


def test_answers_are_deterministic_per_persona_and_sample(world):
    for sample, lay in world[:40]:
        for name in PERSONAS:
            assert SimulatedTeacher(name).answer(sample, lay) == SimulatedTeacher(PERSONAS[name]).answer(sample, lay)
    texts = {name: [SimulatedTeacher(name).answer(s, lay) for s, lay in world[:100]] for name in PERSONAS}
    names = list(texts)
    assert sum(a != b for a, b in zip(texts[names[0]], texts[names[1]])) > 20
    reseeded = SimulatedTeacher(PERSONAS[DESIGNATED].model_copy(update={"seed": 1}))
    assert sum(reseeded.answer(s, lay) != t for (s, lay), t in zip(world[:100], texts[DESIGNATED])) > 0


def test_final_decision_fuses_the_personas_own_labels(world):
    for name in PERSONAS:
        for sample, lay in world[:200]:
            ans = SimulatedTeacher(name).respond(sample, lay)
            r = read(ans.text)
            if r["final"] is not None:
                assert Label.parse(r["final"]) is fuse(ans.beliefs.values())
            for c, lab in r["summary"].items():
                assert lab is ans.beliefs[c]


def test_analysis_describes_what_is_drawn(world):
    teacher = quiet()
    for sample, lay in world:
        a = read(teacher.answer(sample, lay))["analysis"]
        t, scene = lay["target"], SCENES[lay["scene"]]
        assert all(sample.object in a[c].lower() for c in CRITERIA)
        loc = a[Criterion.LOCATION]
        if sample.truth[Criterion.LOCATION] is Label.OUT:
            assert re.search(r"hangs|floats", loc) and "cannot fly" in loc or "nothing holding it" in loc
        elif t["placement"] == "ground":
            assert re.search(r"stands|rests", loc) and scene.ground_word in loc
        else:
            assert re.search(r"\bfl(y|ies)\b", loc) and t["flying"]
        size = a[Criterion.SIZE]
        ratio = t["height_ratio"]
        if t["size_class"] == "big":
            expected = r"twice|three times" if ratio >= 1.75 else r"taller than the person"
            assert re.search(expected, size) and "too big" in size, (size, ratio)
        elif t["size_class"] == "small":
            assert re.search(r"a quarter|a third|half", size) and "too small" in size, (size, ratio)
        else:
            assert re.search(r"as tall as|shorter than", size) and "too" not in size, (size, ratio)
        co = a[Criterion.CO_OCCURRENCE]
        assert scene.place in co
        others = [r["category"] for r in lay["references"] if r["role"] == "context"]
        assert any(o in co for o in others)
        assert ("does not belong" in co or "not found" in co) == (sample.truth[Criterion.CO_OCCURRENCE] is Label.OUT)


def test_an_erring_persona_argues_its_wrong_belief(world):
    wrong = quiet("always-wrong", errors=1.0)
    for sample, lay in world[:200]:
        ans = wrong.respond(sample, lay)
        r = read(ans.text)
        assert all(r["summary"][c] is not sample.truth[c] for c in CRITERIA)
        loc, co = r["analysis"][Criterion.LOCATION], r["analysis"][Criterion.CO_OCCURRENCE]
        if sample.truth[Criterion.LOCATION] is Label.OUT:  # floating, believed fine
            assert "hangs" not in loc and "nothing holding" not in loc
        else:  # believed out of place
            assert re.search(r"not seem to rest|not physically plausible|pasted", loc), loc
        if sample.truth[Criterion.CO_OCCURRENCE] is Label.IN:
            assert "out of place" in co
        else:
            assert "plausibly be found" in co
        size = r["analysis"][Criterion.SIZE]
        assert ("too" in size) == (sample.truth[Criterion.SIZE] is Label.IN), size


def test_answer_without_layout_uses_the_sample_truth(world):
    sample, _ = world[0]
    r = read(quiet().answer(sample))
    assert r["summary"] == sample.truth and Label.parse(r["final"]) is sample.final_truth
    real = Sample(id="coco-17", image="x.png", object="zebra", box=(0, 0, 5, 5))
    with pytest.raises(ValueError, match="coco-17"):
        SimulatedTeacher(DESIGNATED).answer(real)
    with pytest.raises(KeyError, match="unknown persona"):
        SimulatedTeacher("gpt-sim")


def test_persona_config_validates_rates():
    with pytest.raises(ValueError, match="not a probability"):
        PersonaConfig(name="x", model_id="m", error_rates={"size": 2})
    with pytest.raises(ValueError):
        StyleNoise(bold=-0.1)
    p = PersonaConfig(name="x", model_id="m", error_rates={"Co-occurrence": 0.2})
    assert p.error_rates == {"location": 0.0, "size": 0.0, "co_occurrence": 0.2}


def test_load_layouts_matches_a_written_world(tmp_path):
    import pyarrow.parquet as pq

    generate_world(WorldConfig(n=9, seed=2, samples_per_group=3), tmp_path)
    layouts = load_layouts(tmp_path)
    rows = pq.read_table(tmp_path / "manifest.parquet").to_pylist()
    originals = pq.read_table(tmp_path / "originals" / "manifest.parquet").to_pylist()
    assert set(layouts) == {r["id"] for r in rows + originals}
    for row in rows + originals:
        sample = Sample.from_row(row)
        assert read(SimulatedTeacher(DESIGNATED).answer(sample, layouts[sample.id]))["final"]
    with pytest.raises(FileNotFoundError, match="layout.jsonl"):
        load_layouts(tmp_path / "images")


def test_project_parser_reads_every_persona(world):
    parse = pytest.importorskip("scenefit.teachers.parse")
    for name in PERSONAS:
        for sample, lay in world[:300]:
            ans = SimulatedTeacher(name).respond(sample, lay)
            got = parse.parse_teacher_answer(ans.text)
            for c in CRITERIA:
                assert got.labels[c] in (None, ans.beliefs[c]), (name, sample.id, ans.text)
            if ans.dropped is None:
                assert got.status == "ok", (name, ans.text, got.reason)
                assert got.labels == ans.beliefs and got.final is fuse(ans.beliefs.values())
                assert all(got.analyses[c] for c in CRITERIA)
