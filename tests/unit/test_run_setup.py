"""What a pip user starts from: packaged configs by name from any folder, `scenefit configs`,
`scenefit init`, RUN/run.yaml resolved once, `scenefit status` of a run that has not started, the
runner's log lines and stage selection, `annotate --base-url --model` against a loopback server,
a generic CSV under the paper config, and no hint that names a file of the repository.

    .venv/bin/python -m pytest tests/unit/test_run_setup.py -q
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import scenefit
from scenefit.cli import app
from scenefit.core.config import ConfigError, find_config, load_project, packaged_configs, resolve

runner = CliRunner()
PACKAGE = Path(scenefit.__file__).resolve().parent


# ------------------------------------------------------------------------------- configs by name

def test_packaged_configs_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    for name in ("demo", "paper", "own-data"):
        path = find_config(name)
        assert path.is_file() and path.parent == PACKAGE / "configs"
        assert find_config(f"{name}.yaml") == path
        assert load_project(name)  # every section validates
    assert resolve("world", "demo").n == 4000
    assert resolve("train", "own-data").base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    mine = tmp_path / "mine.yaml"
    mine.write_text("split: {seed: 7}\n")
    assert resolve("split", "mine.yaml").seed == 7  # a path still works (relative to the current folder)
    (tmp_path / "demo").mkdir()  # a folder named like a config does not shadow it
    assert find_config("demo") == PACKAGE / "configs" / "demo.yaml"


def test_an_unknown_config_names_what_exists_and_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        find_config("demos")
    msg = str(e.value)
    assert "demo, own-data, paper" in msg and "scenefit configs" in msg and "scenefit init" in msg
    r = runner.invoke(app, ["split", "x.parquet", "--out", "o", "--config", "nope"])
    assert r.exit_code == 2 and "config not found: nope" in r.output


def test_scenefit_configs_lists_prints_and_locates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["configs"])
    assert r.exit_code == 0
    for name in ("demo", "paper", "own-data", "accelerate/multi_gpu_ddp", "accelerate/deepspeed_zero3"):
        assert name in r.stdout and str(packaged_configs()[name]) in r.stdout
    text = runner.invoke(app, ["configs", "own-data"]).stdout
    assert text == packaged_configs()["own-data"].read_text()  # to copy and edit
    path = runner.invoke(app, ["configs", "--path", "accelerate/fsdp"]).stdout.strip()
    assert Path(path).is_file() and yaml.safe_load(Path(path).read_text())["distributed_type"] == "FSDP"
    r = runner.invoke(app, ["configs", "nope"])
    assert r.exit_code == 2 and "own-data" in r.output


def test_set_reaches_into_a_list_and_says_when_it_cannot():
    cfg = resolve("annotate", "own-data", {"teachers.0.max_tokens": 16})
    assert cfg.teachers[0].max_tokens == 16
    with pytest.raises(ConfigError, match="not an index"):
        resolve("annotate", "own-data", {"teachers.5.max_tokens": 16})


# ------------------------------------------------------------------------------- scenefit init

@pytest.mark.parametrize("teachers", [1, 3])
def test_init_writes_a_commented_starter_that_loads(tmp_path, teachers):
    folder = tmp_path / "proj"
    r = runner.invoke(app, ["init", str(folder), "--teachers", str(teachers), "--base-url", "http://gpu:9000/v1",
                            "--model", "org/My VLM", "--api-key-env", "MY_KEY"])
    assert r.exit_code == 0, r.output
    text = (folder / "scenefit.yaml").read_text()
    assert text.count("\n#") > 5 and "scenefit init" in text  # commented
    sections = load_project(folder / "scenefit.yaml")
    first = sections["annotate"].teachers[0]
    assert (first.model, first.base_urls, first.api_key_env) == ("org/My VLM", ["http://gpu:9000/v1"], "MY_KEY")
    assert len(sections["annotate"].teachers) == teachers and sections["consensus"].designated == first.name
    assert sections["train"].base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    paper = resolve("train", "paper")
    for key in ("learning_rate", "epochs", "warmup_ratio", "effective_batch_size", "eval_steps", "precision"):
        assert getattr(sections["train"], key) == getattr(paper, key), key  # the paper's recipe
    assert (sections["train"].lora.r, sections["train"].lora.alpha, sections["train"].lora.target_modules) == (
        paper.lora.r, paper.lora.alpha, paper.lora.target_modules)
    assert sections["run"].manifest == "manifest.csv" and (folder / "manifest.csv").is_file()
    assert (folder / "images").is_dir()
    again = runner.invoke(app, ["init", str(folder)])
    assert again.exit_code == 2 and "--force" in again.output
    assert runner.invoke(app, ["init", str(folder), "--force"]).exit_code == 0


def test_init_example_manifest_reads_as_a_manifest(tmp_path):
    from scenefit.data.manifest import read_manifest

    runner.invoke(app, ["init", str(tmp_path)])
    samples, errors = read_manifest(tmp_path / "manifest.csv")
    assert len(samples) == 3 and not errors and samples[0].box == (120, 200, 340, 420)


# ------------------------------------------------------------------------------- run.yaml and status

def test_run_settings_are_resolved_once_and_read_back_from_any_folder(tmp_path, monkeypatch):
    from scenefit.pipeline.run_folder import RunFolder, start_or_continue

    runner.invoke(app, ["init", str(tmp_path / "proj")])
    monkeypatch.chdir(tmp_path)
    run = start_or_continue(Path("runs/mine"), "proj/scenefit.yaml", None, ["train.max_steps=5"])
    recorded = yaml.safe_load(run.config_file.read_text())
    assert recorded["run"]["manifest"] == str((tmp_path / "proj" / "manifest.csv").resolve())  # made absolute
    assert recorded["train"]["max_steps"] == 5
    monkeypatch.chdir(tmp_path / "proj")  # another folder, no --config
    again = start_or_continue(tmp_path / "runs" / "mine", None, None, None)
    assert again.section("train").max_steps == 5 and again.settings.manifest == recorded["run"]["manifest"]
    # the same command again is fine; other settings are refused, naming them, unless --reconfigure
    monkeypatch.chdir(tmp_path)
    start_or_continue(Path("runs/mine"), "proj/scenefit.yaml", None, ["train.max_steps=5"])
    with pytest.raises(ConfigError, match=r"train\.max_steps .*--reconfigure"):
        start_or_continue(Path("runs/mine"), "proj/scenefit.yaml", None, ["train.max_steps=6"])
    start_or_continue(Path("runs/mine"), None, None, ["train.max_steps=6"], reconfigure=True)
    assert RunFolder("runs/mine").section("train").max_steps == 6
    with pytest.raises(ConfigError, match="SECTION.KEY"):
        start_or_continue(Path("runs/other"), "demo", None, ["max_steps=6"])
    with pytest.raises(ConfigError, match="holds no run yet"):
        start_or_continue(Path("runs/none"), None, None, None)


def test_a_config_without_data_needs_a_manifest(tmp_path):
    r = runner.invoke(app, ["run", "--config", "own-data", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--manifest" in r.output and not (tmp_path / "r" / "run.yaml").exists()
    r = runner.invoke(app, ["run", "--config", "own-data", "--out", str(tmp_path / "r"), "--manifest", str(tmp_path / "no.csv")])
    assert r.exit_code == 2 and "manifest not found" in r.output


def test_status_of_a_run_that_has_not_started_and_of_no_run(tmp_path):
    from scenefit.pipeline.run_folder import start_or_continue

    r = runner.invoke(app, ["status", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "not a run folder" in r.output and "scenefit run --config" in r.output
    start_or_continue(tmp_path / "demo", "demo", None, None)
    r = runner.invoke(app, ["status", str(tmp_path / "demo"), "--json"])
    assert r.exit_code == 0, r.output
    import json

    out = json.loads(r.stdout)
    assert [s["stage"] for s in out["stages"]][:3] == ["tiny-model", "synth", "ingest"]
    assert {s["status"] for s in out["stages"]} == {"not started"}
    assert out["next"] == [f"next: scenefit run --out {tmp_path / 'demo'}    (starts with tiny-model)"]


def test_from_and_to_name_the_stages_there_are(tmp_path):
    from scenefit.pipeline.run_folder import start_or_continue
    from scenefit.pipeline.runner import select
    from scenefit.pipeline.stages import stages_for

    stages = stages_for(start_or_continue(tmp_path / "r", "demo", None, None))
    assert select(stages, "annotate", "train") == (3, 7)
    with pytest.raises(ValueError, match="no such stage; its stages: tiny-model, synth"):
        select(stages, "parse", None)
    with pytest.raises(ValueError, match="comes after"):
        select(stages, "train", "split")
    r = runner.invoke(app, ["run", "--out", str(tmp_path / "r"), "--from", "split"])
    assert r.exit_code == 2 and "the stage before it (consensus) is not done" in r.output


# ------------------------------------------------------------------------------- the runner's log lines

def test_stage_output_becomes_log_lines_with_progress_redraws_thinned(monkeypatch):
    from scenefit.pipeline import runner as runner_mod

    clock = iter([0.0, 1.0, 2.0, 12.0, 13.0, 14.0])
    monkeypatch.setattr(runner_mod.time, "monotonic", lambda: next(clock))
    log, seen = io.StringIO(), []
    lines = runner_mod.LogLines(log, seen.append, every_s=10)
    lines.feed(b"table line\n\x1b[1mbold\x1b[0m\n")
    for k in range(1, 7):  # a bar redrawn six times, then ended by tqdm's newline
        lines.feed(f"\rtrain: {k}/6".encode())
    lines.feed(b"\nnext line with a split utf-8 \xe2")
    lines.feed(b"\x9c\x93 char\n")
    lines.close()
    assert log.getvalue().splitlines() == ["table line", "bold", "train: 1/6", "train: 4/6", "train: 6/6",
                                           "next line with a split utf-8 ✓ char"]
    assert seen[-2] == "train: 6/6" and len(seen) == 9  # the live line sees every redraw


# ------------------------------------------------------------------------------- annotate --base-url --model

def test_annotate_asks_one_openai_teacher_named_on_the_command_line(tmp_path):
    pytest.importorskip("fastapi")
    from scenefit.serve.openai_server import ChatReply, build_openai_app, serve_in_thread
    from scenefit.teachers.store import AnnotationStore
    from support.answers import ANSWER

    asked = []

    async def teacher(req):
        asked.append(req)
        return ChatReply(ANSWER)

    Image.new("RGB", (320, 240), (90, 140, 200)).save(tmp_path / "a.jpg")
    (tmp_path / "m.csv").write_text("id,image,object,box\ns1,a.jpg,cow,\"10,10,100,100\"\ns2,a.jpg,kettle,\"5,5,50,60\"\n")
    db = tmp_path / "a.sqlite"
    with serve_in_thread(build_openai_app(teacher, "org/fake-vlm")) as base:
        r = runner.invoke(app, ["annotate", str(tmp_path / "m.csv"), "--db", str(db), "--base-url", base + "/v1",
                                "--model", "org/fake-vlm", "--no-progress"])
    assert r.exit_code == 0, r.output
    with AnnotationStore(db) as store:
        df = store.to_frame()
    assert sorted(df["sample_id"]) == ["s1", "s2"] and len(asked) == 2
    assert df["teacher"].eq("fake-vlm").all() and df["model_id"].eq("org/fake-vlm").all()
    assert df["status"].eq("ok").all() and df["final"].eq("In-context").all()
    r = runner.invoke(app, ["annotate", str(tmp_path / "m.csv"), "--db", str(db), "--base-url", base + "/v1"])
    assert r.exit_code == 2 and "--base-url and --model go together" in r.output
    r = runner.invoke(app, ["annotate", str(tmp_path / "m.csv"), "--db", str(tmp_path / "b.sqlite")])
    assert r.exit_code == 2 and "--base-url URL --model NAME" in r.output and "scenefit init" in r.output


# ------------------------------------------------------------------------------- a plain CSV under --config paper

def test_a_generic_csv_under_the_paper_config_is_read_by_its_columns(tmp_path):
    import pandas as pd

    Image.new("RGB", (200, 150), (200, 180, 90)).save(tmp_path / "p.jpg")
    Image.new("RGB", (200, 150), (20, 180, 90)).save(tmp_path / "7.png")
    (tmp_path / "plain.csv").write_text("id,image,object,x0,y0,x1,y1\na,p.jpg,cow,10,10,90,90\nb,p.jpg,dog,5,5,60,60\n")
    r = runner.invoke(app, ["ingest", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "o1"), "--config", "paper"])
    assert r.exit_code == 0, r.output
    assert sorted(pd.read_parquet(tmp_path / "o1" / "manifest.parquet")["id"]) == ["a", "b"]
    assert (tmp_path / "o1" / "errors.jsonl").read_text().strip() == ""
    # the paper's own layout is still detected ...
    (tmp_path / "paper.csv").write_text("coco_index,replacement_object\n7,zebra\n")
    r = runner.invoke(app, ["ingest", str(tmp_path / "paper.csv"), "--out", str(tmp_path / "o2"), "--config", "paper"])
    assert r.exit_code == 0, r.output
    assert list(pd.read_parquet(tmp_path / "o2" / "manifest.parquet")["object"]) == ["zebra"]
    # ... and --layout paper still forces it (a plain CSV then has no coco_index: one error per row)
    r = runner.invoke(app, ["ingest", str(tmp_path / "plain.csv"), "--out", str(tmp_path / "o3"), "--config", "paper",
                            "--layout", "paper", "--strict"])
    assert r.exit_code == 1 and "coco_index" in (tmp_path / "o3" / "errors.jsonl").read_text()


# ------------------------------------------------------------------------------- hints a pip user can follow

REPO_FILE = re.compile(r"\b(configs/[\w./-]+\.ya?ml|docs/[\w-]+\.md|scripts/[\w-]+|benchmarks/[\w-]+|tests/[\w/-]+\.py"
                       r"|CONTRIBUTING\.md)")


def _code_strings(path: Path):
    """String constants of a module that are not docstrings (messages, help, descriptions)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_no_message_or_help_names_a_file_of_the_repository():
    """Errors, hints, flag help and setting descriptions name what a pip user has (a packaged
    config's name, `scenefit init`, a verb's --help), never a file of the clone."""
    found = [f"{p.relative_to(PACKAGE)}:{line}: {m.group()}" for p in PACKAGE.rglob("*.py")
             for line, text in _code_strings(p) for m in [REPO_FILE.search(text)] if m]
    assert found == []


def test_no_packaged_config_names_a_file_of_the_repository():
    """`scenefit configs NAME` prints a config to copy: its comments point to nothing a pip user lacks."""
    found = [f"{name}:{n}: {m.group()}" for name, path in packaged_configs().items()
             for n, line in enumerate(path.read_text().splitlines(), 1)
             for m in [REPO_FILE.search(line) or re.search(r"\bREADME\b", line)] if m]
    assert found == []


def test_no_verb_help_names_a_file_of_the_repository():
    """Every verb's --help (its docstring and examples included, which the string check above leaves out)."""
    import typer.main

    verbs = sorted(typer.main.get_command(app).commands)
    assert {"run", "status", "init", "configs", "annotate"} <= set(verbs)
    found = []
    for verb in [None, *verbs]:
        r = runner.invoke(app, [verb, "--help"] if verb else ["--help"], terminal_width=400)
        assert r.exit_code == 0, (verb, r.output)
        found += [f"{verb}: {m.group()}" for m in REPO_FILE.finditer(r.output)]
    assert found == []
