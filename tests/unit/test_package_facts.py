"""Facts about the package itself — which verbs take --config and --set, the pinned stack, the
optional extras it never imports, the shipped configs, `make demo` and `make test`, the network
guard — as README.md and docs/reference.md state them.

    .venv/bin/python -m pytest tests/unit/test_package_facts.py -q
"""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys

import pytest
import tomllib
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir

runner = CliRunner()

#: docs/reference.md, "Settings": the verbs that take --config and --set, and the helpers that take flags only.
STAGE_VERBS = ("tiny-model", "synth", "ingest", "annotate", "consensus", "split", "datasets", "train", "evaluate",
               "predict", "serve", "serve-teacher")
FLAG_ONLY_VERBS = ("standin-model", "parse", "import-answers", "export-vllm", "env", "status", "init", "configs")
#: `scenefit run` takes --config and --set too (its --set names the section: SECTION.KEY=VALUE).
PIPELINE_VERBS = ("run",)


def test_every_verb_is_classed_as_a_stage_or_a_helper():
    """A new verb must be sorted into one list above (and so into docs/reference.md's sentence)."""
    import typer

    assert set(typer.main.get_command(app).commands) == set(STAGE_VERBS) | set(FLAG_ONLY_VERBS) | set(PIPELINE_VERBS)


@pytest.mark.parametrize("verb", STAGE_VERBS + FLAG_ONLY_VERBS + PIPELINE_VERBS)
def test_stage_verbs_take_config_and_set_and_helpers_take_flags_only(verb):
    res = runner.invoke(app, [verb, "--help"])
    assert res.exit_code == 0, res.output
    has = {opt: re.search(rf"(?<![\w-]){opt}(?![\w-])", res.output) is not None for opt in ("--config", "--set")}
    expected = verb in STAGE_VERBS + PIPELINE_VERBS
    assert has == {"--config": expected, "--set": expected}, (verb, has)


def test_env_reports_the_pinned_stack(repo_root):
    """docs/reference.md, "Stack": the versions pyproject pins are the versions installed and reported."""
    pins = {}
    for dep in tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]:
        name, sep, version = dep.partition("==")
        if sep:
            pins[name.strip()] = version.strip()
    assert {"torch", "transformers", "trl", "peft", "accelerate", "datasets"} <= set(pins)
    info = json.loads(runner.invoke(app, ["env", "--json"]).stdout)
    for name, version in pins.items():
        if name in info["packages"]:
            assert info["packages"][name].split("+")[0] == version, name


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_scenefit_never_imports_the_optional_heavy_extras(repo_root):
    """docs/reference.md, "Stack": vllm and deepspeed are tools the printed commands and shipped configs call;
    scenefit's own code imports neither. Ray is imported in one place, scenefit.core.ray_session
    (the Ray engines), which names the `ray` extra when it is missing."""
    heavy = {"vllm", "deepspeed", "ray"}
    found = {str(p.relative_to(repo_root)): _imports(p) & heavy for p in (repo_root / "src").rglob("*.py")}
    assert {p: n for p, n in found.items() if n} == {"src/scenefit/core/ray_session.py": {"ray"}}


def test_teacher_client_and_cli_work_without_the_serve_extra():
    """docs/reference.md, "Stack": the teacher client needs only httpx, and fastapi/uvicorn load only for `serve`."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', 'multipart', 'openai'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import scenefit.teachers.openai_backend, scenefit.teachers.annotate, scenefit.cli\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(scenefit.cli.app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_the_synthetic_world_is_the_one_documented():
    """docs/reference.md, "The synthetic world": six scene types; only bird, kite and airplane may fly; the
    designated simulated teacher."""
    from scenefit.testbed.catalog import CATEGORIES, SCENES
    from scenefit.testbed.personas import DESIGNATED

    assert set(SCENES) == {"beach", "street", "farm", "snowfield", "kitchen", "office"}
    assert {c.name for c in CATEGORIES.values() if c.flying} == {"bird", "kite", "airplane"}
    assert DESIGNATED == "qwen72b-sim"


def test_demo_config_is_the_documented_demo(repo_root, tmp_path):
    """README, "The demo": 4,000 samples, three teachers, three students; the vision
    pretraining draws its own images (a seed of its own, not the world's); `make demo` is
    `scenefit run --config demo`, every stage in pipeline order, ending with one HTTP classification."""
    from scenefit.core.config import resolve
    from scenefit.pipeline.run_folder import start_or_continue
    from scenefit.pipeline.stages import stages_for

    demo = packaged_configs_dir() / "demo.yaml"
    world, tiny, annotate = resolve("world", demo), resolve("tiny_model", demo), resolve("annotate", demo)
    assert world.n == 4000
    assert len(annotate.teachers) == 3
    assert sorted(resolve("train", demo).criteria) == ["co_occurrence", "location", "size"]
    assert tiny.vision_pretrain_steps > 0 and tiny.vision_pretrain_seed != world.seed
    run = start_or_continue(tmp_path / "demo", "demo", None, None)
    assert [s.name for s in stages_for(run)] == ["tiny-model", "synth", "ingest", "annotate", "consensus", "split",
                                                "datasets", "train", "evaluate", "serve"]
    make = (repo_root / "Makefile").read_text()
    assert re.search(r"^demo: venv\n\t.*scenefit run --config demo --out \$\(DEMO_DIR\)", make, re.M)


def test_make_test_is_what_ci_runs_and_runs_every_test(repo_root):
    """docs/reference.md, "Tests": `make test` sets up .venv (dev extra) and runs pytest; CI runs exactly it; tests
    marked slow still run."""
    ci = [line.strip() for line in (repo_root / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == "make test" and not any("pytest" in line for line in ci)
    make = (repo_root / "Makefile").read_text()
    assert re.search(r"^test: venv\b", make, re.M) and "'.[dev]'" in make
    addopts = tomllib.loads((repo_root / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-m" not in addopts.split()


def test_no_test_reaches_beyond_this_machine():
    """README, "Honesty note": nothing here reaches a model hub or a dataset host — the suite's guard refuses any
    connection to an address that is not loopback (conftest.py)."""
    with pytest.raises(OSError, match="not loopback"):
        socket.create_connection(("192.0.2.1", 443), timeout=5)  # TEST-NET-1: never routed


def test_paper_config_matches_the_table_of_departures(repo_root):
    """docs/paper-setup.md (linked from the README): the values the table of departures states."""
    from scenefit.core.config import resolve

    paper = packaged_configs_dir() / "paper.yaml"
    annotate = resolve("annotate", paper)
    assert annotate.prompt_version == "v2"
    assert [t.model for t in annotate.teachers] == ["Qwen/Qwen2.5-VL-72B-Instruct", "allenai/Molmo-72B-0924",
                                                     "OpenGVLab/InternVL3_5-38B"]
    assert [(t.temperature, t.max_tokens) for t in annotate.teachers] == [(None, 512), (0.0, 512), (None, 1024)]
    assert all((t.seed, t.max_pixels) == (0, 1003520) for t in annotate.teachers)
    consensus = resolve("consensus", paper)
    assert consensus.rule == "unanimous_final" and consensus.count_derived_final is False
    assert resolve("split", paper).balance == "none"
    counts = resolve("datasets", paper).counts
    assert (counts.train, counts.val, counts.test) == (20000, 2000, 2000)
    train = resolve("train", paper)
    assert (train.min_pixels, train.max_pixels, train.lr_scheduler) == (None, 1003520, "linear")
    evaluate = resolve("evaluate", paper)
    assert train.precision == evaluate.predict.dtype == "bf16"
