"""The transformers teacher backend: a local model folder (the tiny Qwen2.5-VL) answering in
batches with left padding, stored like any other teacher's answers.

    .venv/bin/python -m pytest tests/e2e/test_annotate_transformers.py -q
"""

from __future__ import annotations

import pytest
from PIL import Image

from scenefit.core.records import Sample
from scenefit.teachers.annotate import annotate
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.store import FAILED, AnnotationStore

pytestmark = pytest.mark.slow


def test_transformers_teacher_batches_and_matches_single_generation(tiny_model_dir, tmp_path):
    from scenefit.models.loading import load_model, load_processor
    from scenefit.prompts import teacher_prompt
    from scenefit.student.chat import chat_messages
    from scenefit.teachers.base import teacher_image
    from scenefit.teachers.transformers_backend import generate_chat

    samples = []
    for i, size in enumerate([(120, 90), (90, 120), (100, 100), (140, 70), (80, 80)]):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", size, (40 * i, 100, 200 - 30 * i)).save(p)
        samples.append(Sample(id=f"s{i}", image=str(p), object=["zebra", "cup", "horse", "car", "bird"][i], box=(5, 5, 50, 50)))
    samples.append(Sample(id="missing", image=str(tmp_path / "nope.png"), object="cat", box=(1, 1, 5, 5)))
    cfg = AnnotateConfig(teachers=[{"name": "local", "backend": "transformers", "model": str(tiny_model_dir), "batch_size": 3,
                                    "max_tokens": 10, "device": "cpu", "max_pixels": 112 * 112}], progress=False)
    summary = annotate(samples, cfg, tmp_path / "a.sqlite")
    t = summary.teachers["local"]
    assert t.stored == 6 and t.failed_by_reason == {"image": 1}
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        df = store.to_frame().set_index("sample_id")
    assert df.loc["missing", "status"] == FAILED and "not_found" in df.loc["missing", "reason"]
    assert (df.drop("missing")["status"] != FAILED).all()
    assert (df.drop("missing")["model_id"] == str(tiny_model_dir)).all()
    # A batched, left-padded answer equals the answer generated alone (greedy decoding).
    proc = load_processor(tiny_model_dir, max_pixels=112 * 112, padding_side="left")
    model = load_model(tiny_model_dir, device="cpu", dtype="fp32")
    s = samples[1]
    alone = generate_chat(model, proc, [chat_messages(teacher_prompt().render(s.object))],
                          [[teacher_image(s, 112 * 112)]], max_new_tokens=10)[0]["text"]
    assert df.loc[s.id, "raw"] == alone
    # Label probabilities were asked for (the default): the tiny model writes no label, so each is
    # null with that reason; the failed request has none at all.
    assert df.drop("missing")["p_out_note"].eq("location, size, co_occurrence, final: no label").all()
    assert df.loc[["missing"], ["p_out", "p_out_note"]].isna().all(axis=None)
    # The tokens with log-probabilities spell the same answer, each the best of its alternatives
    # (greedy), so step i's logits belong to token i.
    scored = generate_chat(model, proc, [chat_messages(teacher_prompt().render(s.object))],
                           [[teacher_image(s, 112 * 112)]], max_new_tokens=10, top_logprobs=2)[0]
    assert scored["text"] == alone and "".join(t.token for t in scored["tokens"]) == alone
    assert all(t.top[0][0] == t.token and t.top[0][1] == pytest.approx(t.logprob) for t in scored["tokens"])
