"""The Ray engines' parts that need no Ray session: the shard/commit scheme of `predict --engine ray`,
the message when the `ray` extra is missing, the teacher-backend registry (no circle, no product
module reaching the test bed), and the ray_vllm request/answer conversions.

    .venv/bin/python -m pytest tests/unit/test_ray_parts.py -q
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

from scenefit.predict.shards import ShardPlan, parts_folder, remove_parts

SRC = Path(__file__).resolve().parents[2] / "src" / "scenefit"


# ---- shards ------------------------------------------------------------------------------


def test_shards_commit_whole_and_resume(tmp_path):
    out = tmp_path / "preds.jsonl"
    plan = ShardPlan.open(out, n_items=7, shard_size=3, key="k1")
    assert plan.n_shards == 3 and plan.pending() == [0, 1, 2] and list(plan.indices(2)) == [6]
    plan.write(1, [{"i": 3}, {"i": 4}, {"i": 5}])
    with pytest.raises(ValueError, match="shard 0: 1 rows for 3 items"):
        plan.write(0, [{"i": 0}])
    # a kill during a write leaves only the temporary file, which never counts as done
    (plan.folder / "shard-000000.jsonl.tmp").write_text('{"i": 0}\n')
    again = ShardPlan.open(out, n_items=7, shard_size=3, key="k1")
    assert again.pending() == [0, 2] and not again.stale
    again.write(0, [{"i": 0}, {"i": 1}, {"i": 2}])
    again.write(2, [{"i": 6}])
    assert [r["i"] for r in again.rows()] == list(range(7))
    remove_parts(out)
    assert not parts_folder(out).exists()


def test_shards_of_another_run_are_replaced(tmp_path):
    out = tmp_path / "preds.parquet"
    ShardPlan.open(out, 4, 2, "old").write(0, [{}, {}])
    for n, size, key in ((4, 2, "new"), (5, 2, "new"), (5, 3, "new")):
        plan = ShardPlan.open(out, n, size, key)
        assert plan.stale and plan.done() == set()
        plan.write(0, [{}] * len(plan.indices(0)))


# ---- the missing extra -------------------------------------------------------------------


def test_missing_ray_names_the_extra(monkeypatch):
    from scenefit.core import ray_session

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ray_session.MissingRayExtra, match=r"scenefit predict --engine ray needs Ray Data.*scenefit\[ray\]"):
        ray_session.join_ray(feature="scenefit predict --engine ray")
    with pytest.raises(ImportError, match=r"pip install 'scenefit\[ray\]'"):
        ray_session.import_ray_llm("teacher 't' (backend ray_http)")


def test_predict_engine_ray_without_the_extra_exits_2_naming_it(monkeypatch, random_head_students, tmp_path):
    from typer.testing import CliRunner

    from scenefit.cli import app

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "image": str(tmp_path / "x.png"), "object": "cow", "box": [1, 1, 5, 5]}) + "\n")
    monkeypatch.setitem(sys.modules, "ray", None)
    res = CliRunner().invoke(app, ["predict", "--students", str(random_head_students), "--manifest", str(manifest),
                                   "--out", str(tmp_path / "p.jsonl"), "--engine", "ray"])
    assert res.exit_code == 2, res.output
    assert "needs Ray Data" in res.output and "scenefit[ray]" in res.output
    res = CliRunner().invoke(app, ["predict", "--students", str(random_head_students), "--manifest", str(manifest),
                                   "--engine", "ray"])
    assert res.exit_code == 2 and "give --manifest and --out" in res.output


# ---- the registry: no circle among teachers/*, no product module importing the test bed ----


def _imports(path: Path) -> set[str]:
    """Every scenefit module a file imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scenefit"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("scenefit"))
    return found


def _module(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)



def test_every_backend_is_registered_and_an_unknown_one_is_named():
    from scenefit.teachers.config import TeacherConfig
    from scenefit.teachers.registry import backend_class, backend_names, make_teacher

    assert {"openai", "transformers", "ray_http", "ray_vllm", "simulated"} <= set(backend_names())
    assert backend_class("simulated").__module__ == "scenefit.testbed.simulated_backend"
    with pytest.raises(ValueError, match="unknown backend 'nope'; known: .*ray_vllm"):
        TeacherConfig(name="t", backend="nope")
    t = make_teacher(TeacherConfig(name="t", backend="ray_http", model="m", base_urls=["http://127.0.0.1:1/v1"]),
                     json_answer=True)
    assert t.streams and t.json_answer
    with pytest.raises(ValueError, match="exactly one of `base_urls`"):
        TeacherConfig(name="t", backend="ray_http", model="m", base_urls=["http://a/v1", "http://b/v1"])


# ---- ray_vllm: the same request and the same probabilities as the openai backend ----------


def test_vllm_rows_carry_the_openai_request_and_answer(tmp_path):
    from PIL import Image

    from scenefit.core.records import Sample
    from scenefit.teachers.base import teacher_image
    from scenefit.teachers.config import TeacherConfig
    from scenefit.teachers.label_probs import p_out_from_tokens
    from scenefit.teachers.openai_backend import chat_body, image_data_url
    from scenefit.teachers.ray_backend import _sample_fields, result_of_row, vllm_postprocess, vllm_preprocess
    from support.answers import ANSWER
    from support.soft_labels import tokens_of

    img = tmp_path / "a.png"
    Image.new("RGB", (90, 60), (10, 120, 40)).save(img)
    cfg = TeacherConfig(name="q", backend="ray_vllm", model="m", max_tokens=33, seed=4, top_logprobs=5, max_pixels=50 * 50)
    sample = Sample(id="s", image=str(img), object="cow", box=(5, 5, 40, 40))
    row = {"i": 0, "sample": json.dumps(_sample_fields(sample)), "prompt": "Is the cow in context?"}
    pre = vllm_preprocess(cfg.model_dump_json(), None, row)
    body = chat_body("m", row["prompt"], image_data_url(teacher_image(sample, cfg.max_pixels)), cfg.decoding())
    assert pre["messages"] == body["messages"] and pre["__inference_error__"] == ""
    assert pre["sampling_params"] == {"temperature": 0.0, "max_tokens": 33, "seed": 4, "logprobs": 5, "detokenize": True}
    # vLLM's output: token ids and, per position, {token_id: {logprob, rank, decoded_token}}
    tokens = tokens_of(ANSWER, {"location": 0.2, "size": 0.7, "co_occurrence": 0.1, "final": 0.4})
    vocab: dict[str, int] = {}
    ids, logprobs = [], []
    for t in tokens:
        alts = {vocab.setdefault(a, len(vocab)): {"logprob": lp, "rank": r + 1, "decoded_token": a} for r, (a, lp) in enumerate(t.top)}
        tid = vocab.setdefault(t.token, len(vocab))
        alts.setdefault(tid, {"logprob": t.logprob, "rank": 99, "decoded_token": t.token})
        ids.append(tid)
        logprobs.append({str(k): v for k, v in alts.items()})  # Arrow may hand the keys back as text
    out = vllm_postprocess(True, {**row, **pre, "generated_text": ANSWER, "generated_tokens": ids, "logprobs": logprobs})
    result = result_of_row(out)
    assert result.raw == ANSWER and result.error is None
    assert (result.p_out, result.p_out_note) == p_out_from_tokens(tokens)
    assert result.p_out["size"] == pytest.approx(0.7)
    bad = vllm_preprocess(cfg.model_dump_json(), None, {**row, "sample": json.dumps({**_sample_fields(sample), "image": str(tmp_path / "no.png")})})
    failed = result_of_row({**row, **bad})
    assert failed.raw is None and failed.error.startswith("image: not_found") and failed.attempts == 0
