"""Behaviour the docs state that no other test checked: each test names the page and section it
holds to (docs/reference.md unless another is named), and fails when the behaviour changes. The
training and serving ones have files of their own (test_train_stop_resume.py, test_serve_cli.py).

    .venv/bin/python -m pytest tests/unit/test_documented_behaviour.py -q
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir
from scenefit.core.criteria import CRITERIA

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("torch_one_thread")

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"


def test_teachers_doc_has_one_vllm_serve_per_paper_teacher(repo_root):
    """docs/teachers.md, "Serving the paper's teachers with vLLM": the `vllm serve` commands for the paper's three
    teachers, tensor parallel for the 72B models, each on the port its config entry calls."""
    from scenefit.core.config import resolve

    text = (repo_root / "docs" / "teachers.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            if "vllm serve" in line and not line.lstrip().startswith("#"):
                argv = shlex.split(line)
                commands.append(argv[argv.index("vllm") :])
    teachers = resolve("annotate", packaged_configs_dir() / "paper.yaml").teachers
    assert len(teachers) == 3
    for t in teachers:
        mine = [a for a in commands if a[2] == t.model]
        assert len(mine) == 1, (t.model, len(mine))
        argv = mine[0]
        assert argv[argv.index("--served-model-name") + 1] == t.model
        port = re.search(r":(\d+)/", t.base_urls[0]).group(1)
        assert argv[argv.index("--port") + 1] == port, t.model
        if "72B" in t.model:
            assert int(argv[argv.index("--tensor-parallel-size") + 1]) >= 2, t.model


def test_ingest_names_a_file_it_cannot_read_unreadable(tmp_path, monkeypatch):
    """"Bringing your own data": a file that exists but cannot be read is refused with code `unreadable`
    (as root no chmod makes a file unreadable, so opening this one is denied by a patch)."""
    import PIL.Image

    from scenefit.data.ingest import IngestConfig, ingest

    for name in ("ok.png", "locked.png"):
        Image.new("RGB", (40, 30), (90, 90, 90)).save(tmp_path / name)
    locked = tmp_path / "locked.png"
    real_open = PIL.Image.open

    def denying_open(fp, *args, **kwargs):
        if isinstance(fp, (str, Path)) and Path(fp) == locked:
            raise PermissionError(13, "Permission denied", str(fp))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image, "open", denying_open)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": n, "image": f"{n}.png", "object": "cow", "box": [2, 2, 20, 20]}) + "\n"
                                for n in ("ok", "locked")))
    result = ingest(manifest, tmp_path / "out", IngestConfig(workers=1))
    assert [s.id for s in result.samples] == ["ok"]
    assert [(e["id"], e["code"]) for e in result.errors] == [("locked", "unreadable")]
    written = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert [e["code"] for e in written] == ["unreadable"]


def _reference_synth_line() -> list[str]:
    text = REFERENCE.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("scenefit synth ") and "--image-size" in ln]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])[1:]


def test_the_reference_synth_command_runs_as_written_and_sizes_follow_the_bands(tmp_path):
    """"The synthetic world": the command line shown works as written (only --n and --out
    changed, to keep it small), its flags reach the world, and size violations are ×2.4–3 / ×0.25–0.35 of the
    category's normal height (up to half a pixel of rounding)."""
    from scenefit.testbed.world import WorldConfig

    argv = _reference_synth_line()
    shown = {flag: int(argv[argv.index(flag) + 1]) for flag in ("--image-size", "--seed", "--samples-per-group")}
    argv[argv.index("--n") + 1] = "60"
    argv[argv.index("--out") + 1] = str(tmp_path / "world")
    r = runner.invoke(app, argv)
    assert r.exit_code == 0, r.output
    world = json.loads((tmp_path / "world" / "world.json").read_text())
    assert shown == {"--image-size": 112, "--seed": 0, "--samples-per-group": 4}  # the values the page shows
    assert world["config"]["image_size"] == shown["--image-size"] and world["config"]["seed"] == shown["--seed"]
    manifest = pd.read_parquet(tmp_path / "world" / "manifest.parquet")
    assert len(manifest) == 60 and manifest["group"].value_counts().max() <= shown["--samples-per-group"]
    assert tuple(WorldConfig().small_factor) == (0.25, 0.35) and tuple(WorldConfig().big_factor) == (2.4, 3.0)
    bands = {"small": (0.25, 0.35), "big": (2.4, 3.0)}
    seen = set()
    for line in (tmp_path / "world" / "layout.jsonl").read_text().splitlines():
        t = json.loads(line)["target"]
        if t["size_class"] not in bands:
            continue
        seen.add(t["size_class"])
        lo, hi = bands[t["size_class"]]
        height, normal = t["box"][3] - t["box"][1], t["normal_height"]
        assert lo * normal - 0.5 - 1e-6 <= height <= hi * normal + 0.5 + 1e-6, t
    assert seen == {"small", "big"}


def test_predict_prints_a_table_on_a_terminal(random_head_students, tmp_path, monkeypatch):
    """"Using the students": `scenefit predict --demo --image … --object … --box …` prints
    a table on a terminal (and JSON when piped); --demo reads $DEMO_DIR/students."""
    import sys

    demo_dir = tmp_path / "demo"
    demo_dir.mkdir()
    (demo_dir / "students").symlink_to(random_head_students)
    monkeypatch.setenv("DEMO_DIR", str(demo_dir))
    Image.new("RGB", (256, 256), (60, 140, 60)).save(tmp_path / "scene.png")
    argv = ["predict", "--demo", "--image", str(tmp_path / "scene.png"), "--object", "zebra", "--box", "40,60,210,230"]
    piped = runner.invoke(app, argv)
    assert piped.exit_code == 0, piped.output
    assert set(json.loads(piped.stdout)) == {"criteria", "final"}
    # the runner's stdout stands in for a terminal (the class is the test runner's own, typer's
    # or click's, whichever CliRunner this is)
    stdout_class = sys.modules[type(runner).__module__]._NamedTextIOWrapper
    monkeypatch.setattr(stdout_class, "isatty", lambda self: True)
    tty = runner.invoke(app, argv)
    assert tty.exit_code == 0, tty.output
    plain = re.sub(r"\x1b\[[0-9;]*m", "", tty.stdout)
    assert "final" in plain and all(h in plain for h in ("criterion", "label", "probability"))
    assert all(c.display in plain for c in CRITERIA)
    assert not plain.lstrip().startswith("{")


def test_export_vllm_refuses_dora(random_head_students, tmp_path):
    """"Using the students": export-vllm refuses adapters vLLM cannot serve, DoRA among
    them (`--force` writes anyway)."""
    students = tmp_path / "students"
    shutil.copytree(random_head_students, students, symlinks=True)
    from scenefit.serve.vllm_export import check_adapter

    assert not any("DoRA" in p for p in check_adapter("size", students / "size").problems)
    cfg_path = students / "size" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["use_dora"] = True
    cfg_path.write_text(json.dumps(cfg))
    assert any("DoRA" in p for p in check_adapter("size", students / "size").problems)
    r = runner.invoke(app, ["export-vllm", "--students", str(students), "--out", str(tmp_path / "v.json")])
    assert r.exit_code == 2 and "DoRA" in r.stderr, r.output
    assert not (tmp_path / "v.json").exists()


def test_evaluate_takes_a_jsonl_originals_manifest_and_writes_conventions(random_head_students, tmp_path):
    """"Evaluating the students": `--originals` takes any manifest (here JSONL, like the paper's
    coco_originals.jsonl); OUT/metrics.json holds location, size, co_occurrence, fused,
    shortcut and the conventions, with errors broken down by object and scene; answers.parquet,
    metrics.json and the report say SYNTHETIC."""
    from scenefit.core.images import draw_box
    from scenefit.core.parquet_io import write_table
    from scenefit.data.datasets import DATASET_COLUMNS
    from scenefit.testbed.toy_students import toy_answer, toy_items

    items, truths = toy_items(3, seed=4)
    rows = {c: [] for c in CRITERIA}
    for k, ((im, obj, box), truth) in enumerate(zip(items, truths)):
        path = tmp_path / f"t{k}.png"
        draw_box(im, box, width=3).save(path)
        for c in CRITERIA:
            rows[c].append({"id": f"t{k}", "group": None, "image": str(path), "object": obj, "box": list(box),
                            "criterion": c.value, "label": truth[c].value, "analysis": "", "prompt": "", "system": "",
                            "target": toy_answer(c, truth[c], obj), "prompt_version": "", "truth": truth[c].value,
                            "final": None, "scene": "toy", "synthetic": True})
    for c in CRITERIA:
        write_table(pd.DataFrame(rows[c], columns=DATASET_COLUMNS), tmp_path / "data" / c.value / "test.parquet")
    originals, _ = toy_items(2, seed=9)
    lines = []
    for k, (im, obj, box) in enumerate(originals):
        im.save(tmp_path / f"o{k}.png")
        lines.append(json.dumps({"id": f"o{k}", "image": f"o{k}.png", "object": obj, "box": list(box)}))
    (tmp_path / "coco_originals.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    r = runner.invoke(app, ["evaluate", "--students", str(random_head_students), "--data", str(tmp_path / "data"),
                            "--out", str(out), "--originals", str(tmp_path / "coco_originals.jsonl"), "--no-explain",
                            "--no-baseline", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"location", "size", "co_occurrence", "fused", "shortcut", "conventions"} <= set(metrics)
    assert metrics["conventions"]  # stated, not an empty placeholder
    assert metrics["shortcut"]["n"] == 2
    assert set(metrics["shortcut"]["in_context_share"]) == {"location", "size", "co_occurrence", "fused"}
    # "Errors are broken down by object category and scene."
    for name in ("location", "size", "co_occurrence", "fused"):
        assert {"errors_by_object", "errors_by_scene"} <= set(metrics[name]), name
    # "answers.parquet, metrics.json and the report say SYNTHETIC when the data is."
    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.parquet_io import read_meta

    assert read_meta(out / "answers.parquet").get("notice") == SYNTHETIC_NOTICE
    assert metrics["synthetic"] is True and SYNTHETIC_NOTICE in (out / "report.html").read_text()


def test_every_flag_of_every_verb_has_help():
    """"The verbs": `scenefit VERB --help` explains every flag (and argument)."""
    import typer

    group = typer.main.get_command(app)
    missing = [f"{name} {param.name}" for name, cmd in group.commands.items() for param in cmd.params
               if not (getattr(param, "help", None) or "").strip()]
    assert missing == []


def test_a_flag_beats_set_which_beats_yaml(tmp_path):
    """"Settings": settings resolve as class defaults < YAML section < `--set` < flags."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("world:\n  seed: 5\n  image_size: 96\n")
    out = tmp_path / "w"
    r = runner.invoke(app, ["synth", "--n", "4", "--out", str(out), "--config", str(cfg), "--set", "seed=1",
                            "--set", "image_size=64", "--seed", "2"])
    assert r.exit_code == 0, r.output
    world = json.loads((out / "world.json").read_text())["config"]
    assert world["seed"] == 2  # flag over --set over YAML
    assert world["image_size"] == 64  # --set over YAML
    assert world["n"] == 4


def test_tiny_model_cli_writes_a_loadable_folder(tmp_path):
    """"The verbs" table: `scenefit tiny-model OUT` writes a model folder (weights,
    tokenizer, processor, chat template) that loads like a real Qwen2.5-VL."""
    from scenefit.models.loading import load_model, load_processor

    out = tmp_path / "model"
    r = runner.invoke(app, ["tiny-model", str(out), "--set", "vision_pretrain_steps=0", "--set",
                            "knowledge_pretrain_steps=0"])
    assert r.exit_code == 0, r.output
    processor = load_processor(str(out), 3136, 12544)
    model = load_model(str(out), dtype="fp32", device="cpu")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert processor.tokenizer.chat_template and "<|im_start|>" in processor.tokenizer.chat_template


def test_teacher_client_retries_the_listed_statuses():
    """"Asking the teachers": the openai backend retries 408/409/425/429/5xx and nothing else."""
    from scenefit.teachers.openai_backend import is_retryable_status

    assert all(is_retryable_status(c) for c in (408, 409, 425, 429, 500, 501, 502, 503, 504, 599))
    assert not any(is_retryable_status(c) for c in (400, 401, 403, 404, 405, 410, 413, 415, 422))


def test_deepspeed_is_an_extra(repo_root):
    """"Several GPUs": the ZeRO configs need `pip install 'scenefit[deepspeed]'`."""
    import tomllib

    extras = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("deepspeed") for dep in extras["deepspeed"])


def test_gallery_holds_the_most_confident_errors_first():
    """"Evaluating the students": the report's gallery shows the most confident errors (agreements
    left out, unparseable answers last)."""
    from scenefit.core.criteria import Label
    from scenefit.evaluate.runner import Answer, worst_errors

    frame = pd.DataFrame([{"id": f"s{i}", "label": "In-context", "image": "x.png", "object": "cow"} for i in range(5)])
    answers = [Answer("s0", Label.OUT, p_out=0.6), Answer("s1", Label.IN, p_out=0.1), Answer("s2", Label.OUT, p_out=0.95),
               Answer("s3", None), Answer("s4", Label.OUT, p_out=0.8)]
    gallery = worst_errors({"location": frame}, {"location": answers}, 10)
    assert [g["id"] for g in gallery] == ["s2", "s4", "s0", "s3"]
    assert [g["id"] for g in worst_errors({"location": frame}, {"location": answers}, 2)] == ["s2", "s4"]


def test_predict_reads_a_parquet_manifest_and_explain_reports_agreement(random_head_students, tmp_path):
    """"Using the students": `predict --students … --manifest … --out preds.parquet
    --explain` — a manifest may be Parquet (besides JSONL/CSV), and with --explain every
    criterion's `*_agrees_with_fast` is in --out."""
    Image.new("RGB", (120, 90), (60, 140, 60)).save(tmp_path / "ok.png")
    pd.DataFrame([{"id": "a", "image": str(tmp_path / "ok.png"), "object": "cow", "box": [10, 10, 60, 70]},
                  {"id": "b", "image": str(tmp_path / "gone.png"), "object": "cow", "box": [10, 10, 60, 70]}]
                 ).to_parquet(tmp_path / "samples.parquet")
    out = tmp_path / "preds.parquet"
    r = runner.invoke(app, ["predict", "--students", str(random_head_students), "--manifest", str(tmp_path / "samples.parquet"),
                            "--out", str(out), "--explain", "--max-new-tokens", "6"])
    assert r.exit_code == 1, r.output  # one item cannot be judged; the other is
    rows = pd.read_parquet(out).set_index("id")
    assert rows.loc["b", "code"] == "not_found"
    for c in CRITERIA:
        assert rows.loc["a", f"{c.value}_label"] in ("In-context", "Out-of-context")
        assert rows.loc["a", f"{c.value}_agrees_with_fast"] in (True, False)  # explained, so compared


def test_annotate_redo_failed_flag_retries_only_the_failures(tmp_path, repo_root):
    """"Asking the teachers": `annotate … --redo-failed` retries failed requests; a plain
    rerun skips them (here a sample the simulated teachers cannot answer, then can)."""
    from scenefit.core.criteria import Label
    from scenefit.core.records import Sample
    from scenefit.data.manifest import read_manifest, write_manifest
    from scenefit.testbed.world import WorldConfig, generate_world

    world = tmp_path / "world"
    generate_world(WorldConfig(n=3, seed=3, originals=False), world)
    samples, _ = read_manifest(world / "manifest.parquet")
    orphan = dict(id="orphan-1", image=samples[0].image, object="zebra", box=(1, 1, 20, 20), synthetic=True)
    write_manifest(samples + [Sample(**orphan)], world / "broken.parquet")  # no truth, no layout: fails
    write_manifest(samples + [Sample(**orphan, truth={c: Label.IN for c in CRITERIA})], world / "fixed.parquet")
    db = tmp_path / "a.sqlite"

    def run(manifest: str, *extra: str) -> dict:
        r = runner.invoke(app, ["annotate", str(world / manifest), "--db", str(db), "--config",
                                str(packaged_configs_dir() / "demo.yaml"), "--no-progress", "--json", *extra])
        assert r.exit_code in (0, 1), r.output
        return json.loads(r.stdout[r.stdout.index("{"):])["teachers"]

    first = run("broken.parquet")
    assert all(t["stored"] == 4 and sum(t["failed_by_reason"].values()) == 1 for t in first.values()), first
    assert all(t["stored"] == 0 for t in run("fixed.parquet").values())  # failures are skipped on a rerun
    redone = run("fixed.parquet", "--redo-failed")
    assert all(t["stored"] == 1 and not t["failed_by_reason"] for t in redone.values()), redone


def test_openai_teacher_keeps_concurrency_requests_in_flight(tmp_path):
    """"Asking the teachers": the openai backend is async with `concurrency` requests in
    flight — as many as that, never more (a loopback server holds each request until the
    expected number is in flight, or a deadline passes, and records the most it saw)."""
    pytest.importorskip("fastapi")
    import asyncio
    import threading
    import time

    from scenefit.core.records import Sample
    from scenefit.serve.openai_server import ChatReply, build_openai_app, serve_in_thread
    from scenefit.teachers.annotate import annotate
    from scenefit.teachers.config import AnnotateConfig
    from support.answers import ANSWER

    concurrency = 3

    class Counting:
        def __init__(self):
            self.now = self.most = 0
            self.lock = threading.Lock()

        async def __call__(self, req) -> ChatReply:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
            deadline = time.monotonic() + 60.0  # a hang guard: a passing run leaves once all are in flight
            while self.most < concurrency and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            with self.lock:
                self.now -= 1
            return ChatReply(ANSWER)

    Image.new("RGB", (64, 48), (30, 160, 60)).save(tmp_path / "im.png")
    samples = [Sample(id=f"s{i}", image=str(tmp_path / "im.png"), object="cow", box=(4, 4, 30, 30)) for i in range(9)]
    runner_ = Counting()
    with serve_in_thread(build_openai_app(runner_, "tiny")) as base:
        cfg = AnnotateConfig(teachers=[{"name": "remote", "backend": "openai", "model": "tiny", "base_urls": [base + "/v1"],
                                        "concurrency": concurrency, "timeout_s": 30, "max_attempts": 1,
                                        "max_tokens": 64}], progress=False, commit_every=2)
        summary = annotate(samples, cfg, tmp_path / "a.sqlite")
    assert summary.teachers["remote"].stored == 9
    assert runner_.most == concurrency


def test_probability_is_the_two_way_softmax_of_the_first_token_logits(random_head_students, tmp_path):
    """"Using the students": the decision compares the first-token logits of
    ` In-context` and ` Out-of-context` after the forced prefix `Decision:`; `probability` is
    their two-way softmax for the reported label. Recomputed here with a plain transformers +
    peft model (not scenefit's loader) on the same processor inputs."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from scenefit.core.criteria import Criterion, Label
    from scenefit.predict import Predictor
    from scenefit.student.answer import DECISION_PREFIX

    Image.new("RGB", (112, 84), (60, 140, 60)).save(tmp_path / "im.png")
    predictor = Predictor.from_students(random_head_students, device="cpu")
    result = predictor.predict([(str(tmp_path / "im.png"), "cow", None, True)])[0].criteria[Criterion.SIZE]
    folder = random_head_students / "size"
    base = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32), str(folder)).eval()
    text = predictor.prompt_text(Criterion.SIZE, "cow") + DECISION_PREFIX
    inputs = predictor.processor(text=[text], images=[Image.open(tmp_path / "im.png").convert("RGB")], return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0, -1]
    first = [predictor.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" In-context", " Out-of-context")]
    p_in, p_out = torch.softmax(logits[first].float(), dim=-1).tolist()
    assert result.p_out == pytest.approx(p_out, abs=1e-4)
    assert result.label is (Label.OUT if p_out > 0.5 else Label.IN)
    assert result.probability == pytest.approx(p_out if result.label is Label.OUT else p_in, abs=1e-4)


def test_demo_knowledge_pretraining_uses_its_own_seed(repo_root):
    """README, "The demo": the tiny model's vision and catalog-knowledge pretraining both
    draw synthetic pictures of their own seeds, never the demo's samples (the vision seed is
    checked in test_package_facts.py; this is the knowledge one)."""
    from scenefit.core.config import resolve

    demo = packaged_configs_dir() / "demo.yaml"
    tiny, world = resolve("tiny_model", demo), resolve("world", demo)
    assert tiny.knowledge_pretrain_steps > 0
    assert tiny.knowledge_pretrain_seed != world.seed
