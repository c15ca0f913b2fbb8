"""Every real-model path on the shrunk Qwen2.5-VL-3B-Instruct stand-in (real vocabulary, stock
template/processor/generation config, random weights): train with the paper recipe scaled down by
--set, load the adapters on the untouched base, export-vllm (names as vLLM maps them, adapters that
move the decision logits), evaluate, predict (fast path and --explain), serve, annotate with the
transformers backend and serve --openai.

    .venv/bin/python -m pytest tests/e2e/test_standin_paths.py -q
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import httpx
import pandas as pd
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir
from scenefit.core.criteria import CRITERIA, Label
from support.train_data import student_row

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_one_thread")]
REPO = Path(__file__).resolve().parents[2]
PAPER = packaged_configs_dir() / "paper.yaml"
#: The paper's train section, scaled to CPU: rank and steps down, one device, small batches, fp32,
#: the stock processor's smallest image (56x56 = 4 image tokens). Everything else as the packaged paper config
#: (LoRA on q/k/v/o of the language model only, dropout 0.1, AdamW 2e-4, warmup 10 %, no modules_to_save,
#: gradient checkpointing, best by eval_loss).
TRAIN_SETS = ["lora.r=8", "lora.alpha=16", "max_steps=3", "eval_steps=1", "save_steps=1", "num_devices=1",
              "per_device_batch_size=2", "gradient_accumulation_steps=1", "effective_batch_size=2",
              "per_device_eval_batch_size=4", "precision=fp32", "dataloader_num_workers=0", "min_pixels=3136",
              "max_pixels=3136", "report_to=[]"]
SIDE = 56


def _image(floating: bool, seed: int) -> Image.Image:
    im = Image.new("RGB", (SIDE, SIDE), (120, 200, 255))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 34, SIDE, SIDE), fill=(60, 170, 50))
    x = 4 + (seed * 7) % 30
    y = 6 if floating else 38
    d.rectangle((x, y, x + 14, y + 12), fill=(250, 250, 250), outline=(255, 0, 0), width=2)
    return im


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """DATA/<criterion>/{train,val,test}.parquet as `scenefit datasets` writes them."""
    root = tmp_path_factory.mktemp("standin_data")
    (root / "images").mkdir()
    for crit in CRITERIA:
        for split, n in (("train", 6), ("val", 2), ("test", 4)):
            rows = []
            for i in range(n):
                label = Label.OUT if i % 2 else Label.IN
                path = root / "images" / f"{split}-{i}.png"
                if not path.exists():
                    _image(label is Label.OUT, i).save(path)
                rows.append(student_row(crit, f"{split}-{i}", f"{split}{i}", path, label))
            (root / "datasets" / crit.value).mkdir(parents=True, exist_ok=True)
            pd.DataFrame(rows).to_parquet(root / "datasets" / crit.value / f"{split}.parquet")
    (root / "datasets" / "manifest.json").write_text(json.dumps({"stage": "datasets", "synthetic": True}))
    return root / "datasets"


@pytest.fixture(scope="module")
def students(data_dir, standin_model_dir, tmp_path_factory) -> Path:
    """Three students trained by `scenefit train --config paper` on the stand-in."""
    out = tmp_path_factory.mktemp("standin_students")
    args = ["train", "--criterion", "all", "--data", str(data_dir), "--model", str(standin_model_dir), "--out", str(out),
            "--config", str(PAPER)]
    for s in TRAIN_SETS:
        args += ["--set", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output[-3000:]
    return out


def test_paper_recipe_trains_on_the_stock_base(students, standin_model_dir):
    for crit in CRITERIA:
        folder = students / crit.value
        adapter = json.loads((folder / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (8, 16, 0.1)
        assert not adapter.get("modules_to_save")
        assert all(t in adapter["target_modules"] for t in ("q_proj", "k_proj", "v_proj", "o_proj"))
        assert "language_model" in adapter["target_modules"] and "visual" not in adapter["target_modules"]
        info = json.loads((folder / "scenefit_student.json").read_text())
        assert info["base_model_path"] == str(standin_model_dir) and info["vllm_servable"] is True
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["global_step"] == 3 and len(metrics["eval_history"]) == 3
        # a loss over the answer tokens: finite and positive (NaN/inf/0 would mean no answer token was found)
        assert all(math.isfinite(e["eval_loss"]) and e["eval_loss"] > 0 for e in metrics["eval_history"])
        # the student's saved processor is the stock one with the recipe's pixel budget
        proc = json.loads((folder / "processor_config.json").read_text())
        assert proc["image_processor"]["size"] == {"shortest_edge": 3136, "longest_edge": 3136}
        assert (folder / "chat_template.jinja").read_text() == (standin_model_dir / "chat_template.jinja").read_text()


def _renamed_copy(src: Path, dst: Path) -> Path:
    """The adapter with its weights saved under names one level too short (no ``model.``): PEFT and
    vLLM both load such a file without error, as a no-op."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file({k.replace("base_model.model.model.", "base_model.model."): v for k, v in tensors.items()},
              str(dst / "adapter_model.safetensors"))
    return dst


def test_adapters_load_on_the_untouched_base_and_move_the_decision(students, standin_model_dir, tmp_path):
    """Loaded as a server would (PEFT on the stock base folder), each adapter changes the base's
    ' In'/' Out' logits on probe images; the same weights under unmatched names change nothing."""
    from scenefit.serve.vllm_export import decision_logit_shifts

    shifts = decision_logit_shifts(str(standin_model_dir), {c: students / c.value for c in CRITERIA}, images=2)
    assert all(s > 1e-4 for s in shifts.values()), shifts
    renamed = _renamed_copy(students / "size", tmp_path / "renamed")
    noop = decision_logit_shifts(str(standin_model_dir), {CRITERIA[1]: renamed}, images=2)
    assert noop[CRITERIA[1]] == 0.0


def test_export_vllm_names_map_onto_vllms_qwen25vl_modules(students, standin_model_dir, tmp_path):
    from scenefit.serve.vllm_export import check_adapter, vllm_module_name

    r = CliRunner().invoke(app, ["export-vllm", "--students", str(students), "--out", str(tmp_path / "vllm.json"),
                                 "--probe", "2"])
    assert r.exit_code == 0, r.output
    spec = json.loads((tmp_path / "vllm.json").read_text())
    assert spec["base_model"] == str(standin_model_dir) and not spec["problems"] and spec["max_lora_rank"] == 8
    assert len(spec["decision_shifts"]) == 3 and min(spec["decision_shifts"].values()) > 1e-4
    n_layers = 2
    for crit in CRITERIA:
        check = check_adapter(crit.value, students / crit.value)
        mapped = {vllm_module_name(m) for m in check.modules}
        expected = {f"language_model.model.layers.{i}.self_attn.{p}" for i in range(n_layers)
                    for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
        assert mapped == expected, sorted(mapped ^ expected)[:4]
    # the same weights saved under names vLLM maps to nothing are refused, never exported as a no-op
    renamed = _renamed_copy(students / "size", tmp_path / "renamed")
    assert any("no-op" in p for p in check_adapter("renamed", renamed).problems)
    # and --probe sees it: loaded on the base, the renamed adapter moves no decision logit
    import shutil

    from scenefit.serve.vllm_export import VllmExportError, export_vllm

    broken = tmp_path / "broken"
    shutil.copytree(students, broken, ignore=shutil.ignore_patterns("trainer"))
    shutil.copy(renamed / "adapter_model.safetensors", broken / "size" / "adapter_model.safetensors")
    with pytest.raises(VllmExportError) as err:
        export_vllm(broken, tmp_path / "x.json", probe=2)
    assert "scenefit-size" in str(err.value) and "changes no decision logit" in str(err.value)
    assert "scenefit-location" not in str(err.value) and not (tmp_path / "x.json").exists()


def test_evaluate_with_the_paper_section(students, data_dir, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, [
        "evaluate", "--students", str(students), "--data", str(data_dir), "--out", str(out), "--config", str(PAPER),
        "--device", "cpu", "--set", "predict.dtype=fp32", "--set", "predict.max_new_tokens=6", "--set", "predict.batch_size=4",
        "--json"])
    assert res.exit_code == 0, res.output[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    answers = pd.read_parquet(out / "answers.parquet")
    for crit in CRITERIA:
        assert metrics[crit.value]["n"] == 4 and metrics[crit.value]["baseline_accuracy"] is not None
    assert answers[answers["model"] == "student"]["raw"].str.startswith("Decision:").all()


def test_predict_fast_path_and_explain_agree_on_the_decision(students, tmp_path):
    path = tmp_path / "scene.png"
    _image(True, 1).save(path)
    common = ["predict", "--students", str(students), "--image", str(path), "--object", "cow", "--boxed",
              "--config", str(PAPER), "--device", "cpu", "--dtype", "fp32", "--max-new-tokens", "6"]
    rows = {}
    for mode, extra in (("fast", []), ("explain", ["--explain"])):
        res = CliRunner().invoke(app, common + extra + ["--out", str(tmp_path / f"{mode}.jsonl")])
        assert res.exit_code == 0, res.output[-2000:]
        rows[mode] = json.loads((tmp_path / f"{mode}.jsonl").read_text().splitlines()[0])
    fast, slow = rows["fast"], rows["explain"]
    for crit in CRITERIA:
        c = crit.value
        # the explanation's first decision step sees the same ' In'/' Out' logits as the fast path
        assert slow[f"{c}_p_out"] == pytest.approx(fast[f"{c}_p_out"], abs=1e-4)
        assert fast[f"{c}_raw"] is None and slow[f"{c}_raw"].startswith("Decision:")
        assert fast[f"{c}_label"] in ("In-context", "Out-of-context")


def test_serve_classifies_with_the_standin_students(students):
    from scenefit.core.records import is_synthetic
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.serve.app import create_app
    from scenefit.serve.config import ServeConfig
    from scenefit.serve.openai_server import serve_in_thread

    predictor = Predictor.from_students(students, config=PredictConfig(max_new_tokens=6, batch_size=4, device="cpu",
                                                                       dtype="fp32"))
    im = _image(False, 2)
    want = predictor.predict([(im, "cow", (4, 4, 40, 40))])[0].to_json()
    app_ = create_app(predictor, ServeConfig(max_batch=4, request_timeout_s=300), token=None,
                      synthetic=is_synthetic(*predictor.students.values()))
    with serve_in_thread(app_) as base, httpx.Client(base_url=base, timeout=300) as c:
        r = c.post("/v1/classify", json={"image": base64.b64encode(_png(im)).decode(), "object": "cow",
                                         "box": [4, 4, 40, 40]})
    assert r.status_code == 200, r.text
    got = r.json()
    for crit in CRITERIA:
        mine, theirs = got["criteria"][crit.value], want["criteria"][crit.value]
        assert mine["label"] == theirs["label"]
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=2e-3)


def test_standin_as_a_transformers_teacher(standin_model_dir, tmp_path):
    from scenefit.core.records import Sample
    from scenefit.teachers.annotate import annotate
    from scenefit.teachers.config import AnnotateConfig
    from scenefit.teachers.store import FAILED, AnnotationStore

    samples = []
    for i in range(3):
        p = tmp_path / f"t{i}.png"
        _image(bool(i % 2), i).save(p)
        samples.append(Sample(id=f"t{i}", image=str(p), object="cow", box=(4, 4, 40, 40)))
    cfg = AnnotateConfig(teachers=[{"name": "standin", "backend": "transformers", "model": str(standin_model_dir),
                                    "batch_size": 2, "max_tokens": 6, "device": "cpu", "max_pixels": SIDE * SIDE}],
                         progress=False)
    summary = annotate(samples, cfg, tmp_path / "a.sqlite")
    assert summary.teachers["standin"].stored == 3
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        df = store.to_frame()
    assert (df["status"] != FAILED).all() and df["raw"].map(lambda x: isinstance(x, str)).all()


def test_serve_openai_on_the_standin(standin_model_dir):
    from support.servers import openai_server

    with openai_server(standin_model_dir, "standin", "--max-batch", "2", "--max-new-tokens", "6") as base:
        url = "data:image/png;base64," + base64.b64encode(_png(_image(True, 0))).decode()
        body = {"model": "standin", "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": "Is the cow in context?"}]}]}
        r = httpx.post(base + "/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert 0 < out["usage"]["completion_tokens"] <= 6
    # the stock template's default system turn + 4 image tokens + the question, by the real tokenizer
    assert out["usage"]["prompt_tokens"] == _prompt_tokens(standin_model_dir)


def _prompt_tokens(folder: Path) -> int:
    from scenefit.models.loading import load_processor

    proc = load_processor(folder)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is the cow in context?"}]}]
    text = proc.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return len(proc(text=[text], images=[_image(True, 0)], return_tensors="pt")["input_ids"][0])


def test_merge_keeps_a_trained_head_on_the_tied_stock_base(standin_model_dir, tmp_path):
    """export-vllm --merge on the stock layout, whose lm_head is tied to the input embeddings (as
    in the 3B): the merged checkpoint keeps the student's trained lm_head copy and the base's
    embeddings, instead of re-tying the head to them when loaded."""
    import torch
    from peft import LoraConfig, get_peft_model

    from scenefit.models.loading import load_model, load_processor
    from scenefit.serve.vllm_export import merge_student

    base = load_model(str(standin_model_dir), dtype="fp32", device="cpu")
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight  # tied
    embeddings = base.get_input_embeddings().weight.detach().clone()
    student = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    head = student.base_model.model.lm_head.modules_to_save["default"].weight
    with torch.no_grad():
        head.add_(0.1 * torch.randn_like(head))  # what training the copy does
    student.save_pretrained(tmp_path / "student")
    load_processor(standin_model_dir).save_pretrained(tmp_path / "student")

    folder = merge_student(str(standin_model_dir), tmp_path / "student", tmp_path / "merged")
    # vLLM's decoders tie lm_head to the embeddings and skip a saved lm_head when the (text) config
    # says tie_word_embeddings: both levels must say the head is its own
    config = json.loads((folder / "config.json").read_text())
    assert config.get("tie_word_embeddings") is False and config["text_config"].get("tie_word_embeddings") is False
    merged = load_model(folder, dtype="fp32", device="cpu")
    assert torch.equal(merged.get_output_embeddings().weight, head.detach())
    assert torch.equal(merged.get_input_embeddings().weight, embeddings)
