"""The Ray engines on a local Ray (2 CPUs, one session for the module): `predict --engine ray` gives
the in-process rows, row for row, and resumes an interrupted run without redoing its shards; the
ray_http teacher fills the store exactly as the openai backend does against the same loopback
teachers (`scenefit serve-teacher` on the tiny model, and a scripted server whose answers carry
labels and logprobs); the ray_vllm processor is built and checked (not run: no GPU here).

    .venv/bin/python -m pytest tests/e2e/test_ray_engines.py -q
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.records import Sample
from scenefit.teachers.annotate import annotate
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.store import AnnotationStore

ray = pytest.importorskip("ray")  # the `ray` extra (part of `dev`)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (startup costs seconds): the engines join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """11 items: 8 scenes and 3 that cannot be judged (missing file, box outside, no object)."""
    root = tmp_path_factory.mktemp("ray_items")
    rows = []
    for i in range(8):
        p = root / f"img{i}.png"
        Image.new("RGB", (112, 112), (30 * i, 140, 255 - 30 * i)).save(p)
        rows.append({"id": f"s{i}", "image": str(p), "object": ["cow", "kite", "oven", "zebra"][i % 4],
                     "box": [10 + i, 20, 60 + i, 90]})
    rows.insert(2, {"id": "missing", "image": str(root / "nope.png"), "object": "cow", "box": [1, 1, 5, 5]})
    rows.insert(5, {"id": "outside", "image": rows[0]["image"], "object": "cow", "box": [500, 500, 600, 600]})
    rows.insert(8, {"id": "noobject", "image": rows[0]["image"], "object": "", "box": [1, 1, 5, 5]})
    path = root / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def predict(students: Path, manifest: Path, out: Path, *flags: str):
    res = CliRunner().invoke(app, ["predict", "--students", str(students), "--manifest", str(manifest), "--out", str(out),
                                   "--batch-size", "3", "--json", *flags])
    assert res.exit_code == 1, res.output  # 1: some items could not be judged
    return [json.loads(line) for line in out.read_text().splitlines()]


def assert_same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for k in x:
            if k.endswith(("_probability", "_p_out")) and x[k] is not None:
                assert y[k] == pytest.approx(x[k], abs=1e-4), (x["id"], k)
            else:
                assert x[k] == y[k], (x["id"], k)


def test_predict_on_ray_gives_the_in_process_rows(random_head_students, manifest, tmp_path):
    here = predict(random_head_students, manifest, tmp_path / "here.jsonl")
    there = predict(random_head_students, manifest, tmp_path / "ray.jsonl", "--engine", "ray", "--actors", "2",
                    "--shard-size", "4")
    assert_same_rows(here, there)
    assert {r["id"]: r["code"] for r in there if r.get("code")} == {
        "missing": "not_found", "outside": "box_outside", "noobject": "missing_field"}
    assert sum(r.get("location_label") is not None for r in there) == 8
    assert not (tmp_path / "ray.jsonl.parts").exists()  # the shards are gone once the file is written


def test_an_interrupted_ray_run_resumes_without_redoing_its_shards(random_head_students, manifest, tmp_path):
    from scenefit.core.progress import Progress
    from scenefit.data.manifest import read_manifest
    from scenefit.predict.config import PredictConfig
    from scenefit.predict.ray_engine import RaySettings, predict_on_ray
    from scenefit.predict.shards import parts_folder

    items, _ = read_manifest(manifest)
    cfg = PredictConfig(students=str(random_head_students), batch_size=2)
    out = tmp_path / "p.jsonl"
    settings = RaySettings(actors=1, shard_size=2)
    class StopAfterTheFirstShard(Progress):
        def advance(self, n: int = 1) -> None:
            if list(parts_folder(out).glob("shard-*.jsonl")):
                raise KeyboardInterrupt  # as a Ctrl-C between two rows

    with pytest.raises(KeyboardInterrupt):
        predict_on_ray(items, cfg, out, settings, progress=StopAfterTheFirstShard(enabled=False))
    kept = {p.name: p.stat().st_mtime_ns for p in parts_folder(out).glob("shard-*.jsonl")}
    assert 1 <= len(kept) < 5
    class Recorder(Progress):
        def bar(self, desc, total, unit=None):
            self.total = total
            return self

        def note(self, **counts):
            self.counts = counts

    seen = Recorder(enabled=False)
    rows = predict_on_ray(items, cfg, out, settings, progress=seen)
    assert (seen.total, seen.counts) == (len(items) - 2 * len(kept), {"resumed": 2 * len(kept)})
    assert {p.name: p.stat().st_mtime_ns for p in parts_folder(out).glob("shard-*.jsonl") if p.name in kept} == kept
    from scenefit.predict import Predictor
    from scenefit.predict.output import prediction_rows

    here = prediction_rows(items, Predictor.from_students(random_head_students, config=cfg).predict(items), synthetic=False)
    assert_same_rows(here, rows)


# ---- teachers -------------------------------------------------------------------------------


def samples_in(folder: Path, objects: list[str]) -> list[Sample]:
    out = []
    for i, obj in enumerate(objects):
        p = folder / f"t{i}.png"
        Image.new("RGB", (150, 100), (20 * i, 120, 60)).save(p)
        out.append(Sample(id=f"s{i}", image=str(p), object=obj, box=(10, 10, 70, 70)))
    out.append(Sample(id="broken", image=str(folder / "none.png"), object="cow", box=(1, 1, 5, 5)))
    return out


def run_both(samples: list[Sample], base: str, tmp_path: Path, **teacher) -> tuple:
    """The same teacher through the openai backend and through ray_http; both stores as frames."""
    frames = {}
    for backend, extra in (("openai", {"concurrency": 4}), ("ray_http", {"ray_actors": 2, "ray_cpus_per_actor": 0.25})):
        t = {"name": "t", "backend": backend, "model": "tiny", "base_urls": [base], "timeout_s": 120, "batch_size": 2,
             "max_pixels": 112 * 112, **teacher, **extra}
        summary = annotate(samples, AnnotateConfig(teachers=[t], progress=False, commit_every=3), tmp_path / f"{backend}.sqlite")
        assert summary.teachers["t"].stored == len(samples)
        with AnnotationStore(tmp_path / f"{backend}.sqlite") as store:
            frames[backend] = store.to_frame().sort_values("sample_id").reset_index(drop=True)
    return frames["openai"], frames["ray_http"]


def assert_same_store(a, b) -> None:
    """Every column equal but the backend's name, the latency, attempts and the time."""
    assert (b["backend"] == "ray_http").all()
    same = [c for c in a.columns if c not in ("backend", "latency_s", "attempts", "created_at")]
    assert a[same].astype(str).to_dict("records") == b[same].astype(str).to_dict("records")


def test_ray_http_fills_the_store_as_openai_does_against_serve_teacher(tiny_model_dir, tmp_path):
    from support.servers import openai_server

    samples = samples_in(tmp_path, ["zebra", "kite", "oven", "cow", "zebra"])
    with openai_server(tiny_model_dir, "tiny", "--max-batch", "4", "--max-new-tokens", "12") as base:
        a, b = run_both(samples, base, tmp_path, max_tokens=12)
    assert_same_store(a, b)
    assert (a["status"] == "failed").sum() == 1 and a.set_index("sample_id").loc["broken", "reason"].startswith("image: not_found")
    assert a["raw"].notna().sum() == 5


def test_ray_http_sends_the_openai_bodies_and_reads_the_same_probabilities(tmp_path):
    """A scripted server answering in the teachers' format with logprobs: the bodies ray_http sends
    are the openai backend's, byte for byte once parsed, and the parses and P(out) are equal."""
    from scenefit.serve.openai_server import ChatReply, build_openai_app, serve_in_thread
    from support.answers import ANSWER
    from support.soft_labels import tokens_of

    bodies: dict[str, list] = {}
    lock = threading.Lock()

    async def runner(req):
        text = next(p["text"] for p in req.conversation[0]["content"] if p["type"] == "text")
        obj = text.split("one object, a ", 1)[1].split(",", 1)[0]
        with lock:
            bodies.setdefault(obj, []).append(req.body)
        p = {"zebra": 0.9, "kite": 0.3, "oven": 0.55}.get(obj, 0.1)
        answer = ANSWER.replace("Size: In-context", "Size: Out-of-context") if p > 0.5 else ANSWER
        return ChatReply(answer, tokens=tokens_of(answer, {"location": p / 2, "size": p, "co_occurrence": 1 - p, "final": p}))

    samples = samples_in(tmp_path, ["zebra", "kite", "oven", "cow"])
    with serve_in_thread(build_openai_app(runner, "tiny")) as url:
        a, b = run_both(samples, url + "/v1", tmp_path, max_tokens=64, top_logprobs=3)
    assert_same_store(a, b)
    assert all(len(v) == 2 and v[0] == v[1] for v in bodies.values()), {k: len(v) for k, v in bodies.items()}
    p_size = {r.sample_id: json.loads(r.p_out)["size"] for r in b.itertuples() if isinstance(r.p_out, str)}
    assert p_size["s0"] == pytest.approx(0.9) and p_size["s1"] == pytest.approx(0.3)


def test_the_vllm_processor_is_built_for_tensor_parallel_engines(tiny_model_dir):
    """The paper's 72B teacher: 2 engines of 4 GPUs each, built and checked (vLLM itself runs on a GPU node)."""
    from scenefit.core.ray_session import import_ray_llm
    from scenefit.teachers.config import TeacherConfig
    from scenefit.teachers.ray_backend import vllm_config

    cfg = TeacherConfig(name="qwen72b", backend="ray_vllm", model=str(tiny_model_dir), tensor_parallel_size=4, ray_actors=2,
                        batch_size=16, engine_kwargs={"max_model_len": 8192})
    llm = import_ray_llm("test")
    vcfg = vllm_config(cfg, llm)
    assert vcfg.engine_kwargs["tensor_parallel_size"] == 4 and vcfg.engine_kwargs["max_model_len"] == 8192
    assert vcfg.engine_kwargs["limit_mm_per_prompt"] == {"image": 1} and vcfg.should_continue_on_error
    assert vcfg.get_concurrency() == {"min_size": 1, "max_size": 2}
    processor = llm.build_processor(vcfg)
    assert processor.list_stage_names() == ["PrepareMultimodalStage", "ChatTemplateStage", "TokenizeStage",
                                            "vLLMEngineStage", "DetokenizeStage"]
    engine = processor.get_stage_by_name("vLLMEngineStage")
    assert engine.fn_constructor_kwargs["engine_kwargs"]["tensor_parallel_size"] == 4
    bundles = engine.map_batches_kwargs["ray_remote_args_fn"].args[0]
    assert bundles == 4  # one placement group of 4 GPU bundles per engine
