"""Teachers' probabilities from annotation to the student datasets, end to end: simulated
personas, and an openai teacher reached over HTTP on loopback (an OpenAI-compatible server whose
answers are the designated persona's, with token logprobs in the OpenAI format).

    .venv/bin/python -m pytest tests/e2e/test_soft_labels_e2e.py -q
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from scenefit.data.manifest import read_manifest
from scenefit.teachers.annotate import annotate
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.store import AnnotationStore, p_out_values
from support.soft_pipeline import CO_JUDGES, DESIGNATED, run_to_datasets  # noqa: F401

pytest.importorskip("fastapi")

N = 48

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from scenefit.testbed.world import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("soft_world") / "world"
    generate_world(WorldConfig(n=N, seed=11, originals=False), out)
    return out

def _pixels_key(image) -> str:
    rgb = image.convert("RGB")
    return hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()

class PersonaRunner:
    """A ChatRunner answering as one simulated persona: the sample is found by its image's
    pixels; the tokens carry the persona's P(out) at each label as top_logprobs."""

    def __init__(self, persona: str, samples, layouts, max_pixels: int, logprobs: bool = True):
        from scenefit.teachers.base import teacher_image
        from scenefit.testbed.personas import SimulatedTeacher

        self.teacher = SimulatedTeacher(persona)
        self.by_pixels = {_pixels_key(teacher_image(s, max_pixels)): s for s in samples}
        self.layouts = layouts
        self.logprobs = logprobs
        self.bodies: list[dict] = []

    async def __call__(self, req):
        from scenefit.serve.openai_server import ChatReply
        from support.soft_labels import tokens_of

        self.bodies.append(req.body)
        sample = self.by_pixels[_pixels_key(req.images[0])]
        answer = self.teacher.respond(sample, self.layouts.get(sample.id))
        probs = {k: v for k, v in answer.p_out.items() if v is not None}
        tokens = tokens_of(answer.text, probs) if self.logprobs else None
        return ChatReply(answer.text, "stop", 100, len(answer.text.split()), tokens=tokens if req.logprobs else None)

def _check_datasets(datasets, samples, layouts):
    """teacher_p_out is the designated persona's own P(out); the mean lies among the personas'."""
    from scenefit.testbed.personas import SimulatedTeacher

    by_id = {s.id: s for s in samples}
    personas = {p: SimulatedTeacher(p) for p in (DESIGNATED, *CO_JUDGES)}
    checked = 0
    for crit, df in datasets.items():
        assert len(df) > 0
        assert df["teacher_p_out"].dtype == float and df["teachers_mean_p_out"].dtype == float
        for _, row in df.iterrows():
            s = by_id[row["id"]]
            mine = {p: t.respond(s, layouts.get(s.id)).p_out[crit] for p, t in personas.items()}
            if mine[DESIGNATED] is None:
                assert pd.isna(row["teacher_p_out"])
            else:
                assert row["teacher_p_out"] == pytest.approx(mine[DESIGNATED], abs=1e-5)
                # the label it is trained on is the designated teacher's own, so P(out) leans its way
                assert (row["teacher_p_out"] > 0.5) == (row["label"] == "Out-of-context")
                checked += 1
            known = [v for v in mine.values() if v is not None]
            if known:
                assert min(known) - 1e-6 <= row["teachers_mean_p_out"] <= max(known) + 1e-6
    assert checked >= 20
    return checked

def test_simulated_teachers_probabilities_reach_the_datasets(world, tmp_path):
    from scenefit.testbed.personas import load_layouts

    samples, _ = read_manifest(world / "manifest.parquet")
    teachers = [{"name": p, "backend": "simulated", "persona": p} for p in (DESIGNATED, *CO_JUDGES)]
    db = tmp_path / "a.sqlite"
    annotate(samples, AnnotateConfig(teachers=teachers, progress=False), db, manifest_path=world / "manifest.parquet")
    with AnnotationStore(db) as store:
        rows = store.rows()
    assert all(p_out_values(r["p_out"])["final"] is not None or r["p_out_note"] for r in rows)
    _check_datasets(run_to_datasets(tmp_path, db, world / "manifest.parquet"), samples, load_layouts(world))

def test_openai_teacher_over_http_records_logprob_probabilities_to_the_datasets(world, tmp_path):
    """The designated teacher answers over HTTP (OpenAI chat completions with logprobs); the
    store holds the P(out) read from its label tokens, and the datasets carry them."""
    from scenefit.serve.openai_server import build_openai_app, serve_in_thread
    from scenefit.testbed.personas import SimulatedTeacher, load_layouts

    samples, _ = read_manifest(world / "manifest.parquet")
    layouts = load_layouts(world)
    max_pixels = 256 * 256
    runner = PersonaRunner(DESIGNATED, samples, layouts, max_pixels)
    with serve_in_thread(build_openai_app(runner, model_name="qwen72b")) as base:
        teachers = [{"name": DESIGNATED, "backend": "openai", "model": "qwen72b", "base_urls": [base + "/v1"],
                     "concurrency": 4, "max_pixels": max_pixels, "top_logprobs": 4}]
        teachers += [{"name": p, "backend": "simulated", "persona": p} for p in CO_JUDGES]
        db = tmp_path / "a.sqlite"
        summary = annotate(samples, AnnotateConfig(teachers=teachers, progress=False), db,
                           manifest_path=world / "manifest.parquet")
    assert summary.teachers[DESIGNATED].stored == N and not summary.teachers[DESIGNATED].failed_by_reason
    assert all(b.get("logprobs") is True and b.get("top_logprobs") == 4 for b in runner.bodies)
    with AnnotationStore(db) as store:
        mine = [r for r in store.rows(teacher=DESIGNATED)]
    persona = SimulatedTeacher(DESIGNATED)
    by_id = {s.id: s for s in samples}
    for r in mine:  # what the store holds is the persona's own probability, read back from tokens
        assert r["backend"] == "openai"
        meant = persona.respond(by_id[r["sample_id"]], layouts.get(r["sample_id"])).p_out
        got = p_out_values(r["p_out"])
        assert got == {k: (None if v is None else pytest.approx(v, abs=1e-5)) for k, v in meant.items()}, r["raw"]
        assert (r["p_out_note"] is None) == all(v is not None for v in meant.values())
    _check_datasets(run_to_datasets(tmp_path, db, world / "manifest.parquet"), samples, layouts)

def test_a_server_without_logprobs_and_logprobs_off_are_recorded_as_such(world, tmp_path):
    from scenefit.serve.openai_server import build_openai_app, serve_in_thread
    from scenefit.testbed.personas import load_layouts

    samples, _ = read_manifest(world / "manifest.parquet")
    samples = samples[:4]
    runner = PersonaRunner(DESIGNATED, samples, load_layouts(world), 256 * 256, logprobs=False)
    with serve_in_thread(build_openai_app(runner, model_name="qwen72b")) as base:
        for name, logprobs, note in (("silent", True, "server returned no logprobs"),
                                     ("off", False, "not recorded (logprobs: false)")):
            cfg = AnnotateConfig(teachers=[{"name": name, "backend": "openai", "model": "qwen72b", "max_pixels": 256 * 256,
                                            "base_urls": [base + "/v1"], "logprobs": logprobs}], progress=False)
            annotate(samples, cfg, tmp_path / "a.sqlite")
            with AnnotationStore(tmp_path / "a.sqlite") as store:
                rows = store.rows(teacher=name)
            assert len(rows) == 4 and all(r["status"] != "failed" for r in rows)
            assert {r["p_out_note"] for r in rows} == {note}
            assert all(p_out_values(r["p_out"]) == dict.fromkeys(("location", "size", "co_occurrence", "final")) for r in rows)
    assert "logprobs" not in runner.bodies[-1] and runner.bodies[0]["logprobs"] is True
    assert json.loads(json.dumps(runner.bodies[0]))["top_logprobs"] == 5

def test_a_server_that_refuses_logprobs_is_asked_without_them(world, tmp_path):
    """A 400 naming logprobs: the answer is asked again without them (and later ones never ask);
    the answers are stored, their probabilities null with the server's reason."""
    from fastapi import HTTPException

    from scenefit.serve.openai_server import build_openai_app, serve_in_thread
    from scenefit.testbed.personas import load_layouts

    samples, _ = read_manifest(world / "manifest.parquet")
    samples = samples[:5]
    inner = PersonaRunner(DESIGNATED, samples, load_layouts(world), 256 * 256)

    async def refusing(req):
        if req.logprobs:
            inner.bodies.append(req.body)
            raise HTTPException(400, "logprobs are not supported for this model")
        return await inner(req)

    with serve_in_thread(build_openai_app(refusing, model_name="qwen72b")) as base:
        cfg = AnnotateConfig(teachers=[{"name": "strict", "backend": "openai", "model": "qwen72b", "concurrency": 1,
                                        "max_pixels": 256 * 256, "base_urls": [base + "/v1"]}], progress=False)
        summary = annotate(samples, cfg, tmp_path / "a.sqlite")
    assert summary.teachers["strict"].stored == 5 and not summary.teachers["strict"].failed_by_reason
    assert sum(1 for b in inner.bodies if b.get("logprobs")) == 1  # asked once, then never again
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        rows = store.rows()
    assert all(r["status"] in ("ok", "partial") and r["p_out"] is None for r in rows)
    assert {r["p_out_note"] for r in rows} == {"server refused logprobs (http_400: logprobs are not supported for this model)"}

