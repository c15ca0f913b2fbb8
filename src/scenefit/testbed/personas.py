"""Simulated teachers: personas that answer the three-criteria question about a synthetic
sample in the teachers' text format, with per-criterion error rates and style noise.

    from scenefit.testbed.personas import SimulatedTeacher, PERSONAS, load_layouts
    layouts = load_layouts("runs/demo/world")
    text = SimulatedTeacher("qwen72b-sim").answer(sample, layouts.get(sample.id))

An answer is a pure function of (persona, sample, layout): the same persona seed and sample id
always give the same text. The persona first forms a *belief* per criterion (the truth,
flipped with the persona's error rate), then writes analysis sentences that describe what is
drawn (from the layout: where the target stands, its height against the reference person,
what else is in the scene) in words consistent with that belief — an erring persona argues
its wrong belief — then the Summary and the Final decision (fused from its beliefs). Style
noise follows (markdown bold, bullets, lower case, missing final period, one dropped line,
reordered criteria, extra prose), each drawn independently with the persona's rate.

Without a layout the answer is built from ``sample.truth`` alone (generic sentences); a sample
with neither truth nor layout is a ValueError naming it — simulated teachers only answer about
the synthetic world.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from scenefit.core.criteria import CRITERIA, TEACHER_ORDER, Criterion, Label, fuse
from scenefit.core.records import Sample
from scenefit.testbed.catalog import CATEGORIES, SCENES, article, plural
from scenefit.testbed.world import load_layouts

__all__ = ["PersonaConfig", "StyleNoise", "PERSONAS", "DESIGNATED", "SimulatedTeacher", "SimulatedAnswer",
           "load_layouts"]


class StyleNoise(BaseModel):
    """How often a persona strays from the exact format (each a per-answer probability)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bold: float = Field(default=0.0, ge=0, le=1, description="Keys written in markdown bold (**Location:**).")
    bullets: float = Field(default=0.0, ge=0, le=1, description="Criterion lines start with a bullet (-, *, •).")
    lowercase: float = Field(default=0.0, ge=0, le=1, description="The whole answer in lower case.")
    no_final_period: float = Field(default=0.0, ge=0, le=1, description="'Final decision: …' without its period.")
    dropped_line: float = Field(default=0.0, ge=0, le=1, description="One criterion or final-decision line left out.")
    reordered: float = Field(default=0.0, ge=0, le=1, description="Criteria in another order than the prompt's.")
    extra_prose: float = Field(default=0.0, ge=0, le=1, description="A sentence of prose before and/or after.")


class PersonaConfig(BaseModel):
    """One simulated teacher: whom it stands in for, how often it errs, how it writes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Persona name, used as the teacher name in annotations.")
    model_id: str = Field(description="The real model this persona stands in for (provenance only).")
    seed: int = Field(default=0, description="Seed of its errors and style; answers are a function of (seed, sample id).")
    error_rates: dict[str, float] = Field(
        description="Probability of a wrong label per criterion (keys: location, size, co_occurrence)."
    )
    style: StyleNoise = Field(default_factory=StyleNoise, description="Style noise rates.")

    @field_validator("error_rates")
    @classmethod
    def _rates(cls, v: dict[str, float]) -> dict[str, float]:
        out = {c.value: 0.0 for c in CRITERIA}
        for key, rate in v.items():
            crit = Criterion.parse(str(key))
            if not 0.0 <= float(rate) <= 1.0:
                raise ValueError(f"error_rates.{crit.value}={rate} is not a probability in [0, 1]")
            out[crit.value] = float(rate)
        return out

    def error_rate(self, criterion: Criterion) -> float:
        return self.error_rates[Criterion(criterion).value]


#: The designated teacher (the paper's Qwen2.5-VL-72B) — its analyses become the students' targets.
DESIGNATED = "qwen72b-sim"

# Why these rates: an in-context sample survives a unanimous-final consensus only when all three
# personas get all three criteria right (here ~50 % of the time; ~70 % of all samples are kept,
# close to the paper's 76 %). Much noisier co-judges would leave the balanced split short of
# in-context samples; much cleaner ones would leave consensus nothing to filter.

PERSONAS: dict[str, PersonaConfig] = {
    p.name: p
    for p in (
        PersonaConfig(
            name="qwen72b-sim", model_id="Qwen/Qwen2.5-VL-72B-Instruct (simulated)", seed=72,
            error_rates={"location": 0.03, "size": 0.05, "co_occurrence": 0.04},
            style=StyleNoise(bold=0.05, bullets=0.05, lowercase=0.02, no_final_period=0.05, dropped_line=0.02,
                             reordered=0.02, extra_prose=0.05),
        ),
        PersonaConfig(
            name="molmo72b-sim", model_id="allenai/Molmo-72B-0924 (simulated)", seed=7272,
            error_rates={"location": 0.08, "size": 0.10, "co_occurrence": 0.07},
            style=StyleNoise(bold=0.30, bullets=0.15, lowercase=0.10, no_final_period=0.30, dropped_line=0.06,
                             reordered=0.10, extra_prose=0.30),
        ),
        PersonaConfig(
            name="internvl38b-sim", model_id="OpenGVLab/InternVL3_5-38B (simulated)", seed=38,
            error_rates={"location": 0.07, "size": 0.12, "co_occurrence": 0.09},
            style=StyleNoise(bold=0.15, bullets=0.35, lowercase=0.25, no_final_period=0.20, dropped_line=0.08,
                             reordered=0.15, extra_prose=0.20),
        ),
    )
}

STYLE_FLAGS = tuple(StyleNoise.model_fields)


@dataclass(frozen=True)
class SimulatedAnswer:
    """An answer with what went into it: the beliefs per criterion and the style flags drawn."""

    text: str
    beliefs: dict[Criterion, Label]
    style: dict[str, bool] = field(default_factory=dict)
    dropped: Optional[str] = None  # which line was dropped ("analysis:location", "final", …)


# --- what the image shows, in words ------------------------------------------------------------

@dataclass(frozen=True)
class _Facts:
    obj: str
    place: str  # "on the beach"
    scene: str  # "beach"
    ground: str  # "sand"
    up_there: str  # "in the sky" / "on the wall"
    placement: Optional[str]  # "ground" | "sky" | None (unknown)
    flying: bool
    ratio: Optional[float]  # target height / person height
    size_class: Optional[str]
    company: str  # "the sheep and the dog"


def _facts(sample: Sample, layout: Optional[dict]) -> _Facts:
    scene = SCENES.get((layout or {}).get("scene") or sample.scene or "")
    cat = CATEGORIES.get(sample.object)
    target = (layout or {}).get("target") or {}
    others = [r["category"] for r in (layout or {}).get("references", []) if r.get("role") == "context"]
    names = [("another " if n == sample.object else "the ") + n for n in dict.fromkeys(others)]
    if layout and not names:
        names = ["the person"]  # an original whose only context object is the boxed one
    company = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) or "the other objects"
    return _Facts(
        obj=sample.object,
        place=scene.place if scene else "in the scene",
        scene=scene.name if scene else "scene",
        ground=scene.ground_word if scene else "ground",
        up_there=("high up against the wall" if scene.indoor else f"in the {scene.sky_word}") if scene else "in the air",
        placement=target.get("placement"),
        flying=bool(target.get("flying", cat.flying if cat else False)),
        ratio=target.get("height_ratio"),
        size_class=target.get("size_class"),
        company=company,
    )


def _ratio_phrase(r: float) -> str:
    """A measured height ratio in words ("about three times as tall as the person")."""
    if r < 0.45:
        part = "a quarter" if r < 0.3 else "a third" if r < 0.4 else "half"
        return f"only about {part} as tall as the person"
    if r < 0.8:
        return "a little shorter than the person"
    if r < 1.25:
        return "about as tall as the person"
    if r < 1.75:
        return "somewhat taller than the person"
    n = round(r)
    times = {2: "twice", 3: "three times", 4: "four times"}.get(n, f"{n} times")
    return f"about {times} as tall as the person"


def _location(f: _Facts, belief: Label, truth: Label, rng: random.Random) -> str:
    o, O = f.obj, f.obj.capitalize()
    in_sky = f.placement == "sky" if f.placement else truth is Label.OUT
    if belief is Label.IN:
        if not in_sky:
            return rng.choice([f"The {o} stands on the {f.ground} of the {f.scene}.",
                               f"The {o} rests on the {f.ground} {f.place}, supported like the objects around it."])
        if f.flying:
            return rng.choice([f"The {o} is up {f.up_there} {f.place}, which is natural since {plural(o)} fly.",
                               f"The {o} flies {f.up_there} above the {f.ground}, as {plural(o)} do."])
        return f"The {o} seems to be held up by something near the horizon {f.place}."
    if in_sky and not f.flying:
        return rng.choice([f"The {o} hangs {f.up_there} far above the {f.ground}, with nothing holding it up.",
                           f"The {o} floats above the horizon {f.place} although {plural(o)} cannot fly."])
    if in_sky:
        return f"{O} floating {f.up_there} like this, with nothing holding it, is not physically plausible."
    return f"The {o} does not seem to rest on the {f.ground}; it looks pasted onto the scene."


def _size(f: _Facts, belief: Label, truth: Label, rng: random.Random) -> str:
    o = f.obj
    measured = _ratio_phrase(f.ratio) if f.ratio is not None else None
    if belief is truth and measured:
        if belief is Label.IN:
            return rng.choice([f"The {o} is {measured} next to it, a normal size for {article(o)}.",
                               f"The {o} is {measured}, a plausible scale for the scene."])
        too = "small" if f.size_class == "small" else "big"
        return rng.choice([f"The {o} is {measured} next to it, far too {too} for {article(o)}.",
                           f"The {o} is {measured}, much too {too} for the scene."])
    if belief is Label.IN:
        return rng.choice([f"The {o} looks about right in scale next to the person.",
                           f"The {o} has a plausible size for the scene."])
    if f.size_class in ("small", "big") and belief is truth:
        return f"The {o} is far too {f.size_class} for the scene."
    too = rng.choice(["big", "small"]) if truth is Label.IN or f.size_class is None else f.size_class
    return f"The {o} looks too {too} compared with the objects around it."


def _co_occurrence(f: _Facts, belief: Label, truth: Label, rng: random.Random) -> str:
    a, o = article(f.obj).capitalize(), f.obj
    if belief is Label.IN:
        if truth is Label.IN:
            return rng.choice([f"{a} is a usual sight {f.place}, next to {f.company}.",
                               f"{plural(o).capitalize()} are commonly found {f.place} with {f.company}."])
        return f"{a} could plausibly be found {f.place} with {f.company}."
    if truth is Label.OUT:
        return rng.choice([f"{a} does not belong {f.place} beside {f.company}.",
                           f"{plural(o).capitalize()} are not found {f.place}, unlike {f.company}."])
    return f"{a} seems out of place with {f.company} {f.place}."


_WRITERS = {Criterion.LOCATION: _location, Criterion.SIZE: _size, Criterion.CO_OCCURRENCE: _co_occurrence}

_BEFORE = ("Let me look at the image carefully.", "Here is my assessment of the boxed {obj}.",
           "Sure! I will judge the {obj} in the red box on each criterion.")
_AFTER = ("I hope this helps.", "These judgements rest only on what is visible in the image.",
          "Let me know if you need more detail.")


class SimulatedTeacher:
    """One persona answering about synthetic samples (see the module docstring)."""

    def __init__(self, persona: Union[str, PersonaConfig]):
        if isinstance(persona, str):
            if persona not in PERSONAS:
                raise KeyError(f"unknown persona {persona!r}; known: {', '.join(PERSONAS)}")
            persona = PERSONAS[persona]
        self.persona = persona

    @property
    def name(self) -> str:
        return self.persona.name

    def answer(self, sample: Sample, layout: Optional[dict] = None) -> str:
        """The answer text (teachers' Analysis / Summary / Final decision format, with noise)."""
        return self.respond(sample, layout).text

    def respond(self, sample: Sample, layout: Optional[dict] = None) -> SimulatedAnswer:
        """The answer with its beliefs and style flags (for tests and diagnostics)."""
        truth = _truth(sample, layout)
        p = self.persona
        rng = random.Random(f"scenefit-teacher/{p.name}/{p.seed}/{sample.id}")
        beliefs = {c: (_flip(truth[c]) if rng.random() < p.error_rate(c) else truth[c]) for c in CRITERIA}
        style = {flag: rng.random() < getattr(p.style, flag) for flag in STYLE_FLAGS}
        facts = _facts(sample, layout)
        sentences = {c: _WRITERS[c](facts, beliefs[c], truth[c], rng) for c in CRITERIA}
        order = list(TEACHER_ORDER)
        if style["reordered"]:
            while order == list(TEACHER_ORDER):
                rng.shuffle(order)
        lines: list[tuple[str, str, str]] = [("head", "Analysis", "")]  # (line id, key, value)
        lines += [(f"analysis:{c.value}", c.display, sentences[c]) for c in order]
        lines += [("head", "Summary", "")]
        lines += [(f"summary:{c.value}", c.display, beliefs[c].value) for c in order]
        final = fuse(beliefs.values())
        lines += [("final", "Final decision", final.value + ("" if style["no_final_period"] else "."))]
        dropped = None
        if style["dropped_line"]:
            droppable = [i for i, line in enumerate(lines) if line[0] != "head"]
            dropped = lines.pop(rng.choice(droppable))[0]
        bullet = rng.choice(["- ", "* ", "• "])
        out = []
        for line_id, key, value in lines:
            k = f"**{key}:**" if style["bold"] else f"{key}:"
            text = f"{k} {value}" if value else k
            if style["bullets"] and line_id != "head":
                text = bullet + text
            out.append(text)
        if style["extra_prose"]:
            where = rng.choice(["before", "after", "both"])
            if where in ("before", "both"):
                out.insert(0, rng.choice(_BEFORE).format(obj=sample.object) + "\n")
            if where in ("after", "both"):
                out.append("\n" + rng.choice(_AFTER))
        text = "\n".join(out)
        if style["lowercase"]:
            text = text.lower()
        return SimulatedAnswer(text=text, beliefs=beliefs, style=style, dropped=dropped)


def _flip(label: Label) -> Label:
    return Label.IN if label is Label.OUT else Label.OUT


def _truth(sample: Sample, layout: Optional[dict]) -> dict[Criterion, Label]:
    raw = (layout or {}).get("truth")
    if raw:
        return {Criterion(k): Label(v) for k, v in raw.items()}
    if sample.truth and all(c in sample.truth for c in CRITERIA):
        return dict(sample.truth)
    raise ValueError(f"sample {sample.id!r}: a simulated teacher needs the synthetic truth (a layout or "
                     "truth_* for every criterion); it cannot answer about real images")
