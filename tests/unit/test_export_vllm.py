"""`scenefit export-vllm`: every adapter's target modules and rank against vLLM's documented
limits (vllm.config.lora.MaxLoRARanks; LoRA on the language model's projections only; no
modules_to_save), the spec file, the printed command, refusal and --force.

    .venv/bin/python -m pytest tests/unit/test_export_vllm.py -q
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.criteria import CRITERIA
from scenefit.serve.vllm_export import (
    VLLM_LORA_LEAVES,
    VLLM_MAX_LORA_RANKS,
    VllmExportError,
    check_adapter,
    export_vllm,
    round_rank,
)
from scenefit.testbed.toy_students import build_toy_students

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def lora_students(tiny_model_dir, tmp_path_factory):
    return build_toy_students(tiny_model_dir, tmp_path_factory.mktemp("vllm_ok"), steps=0, rank=24, modules_to_save=None)


@pytest.fixture(scope="module")
def head_students(random_head_students):
    return random_head_students


def _assert_servable(check):
    assert check.problems == []
    assert check.modules, "no LoRA weights"
    for module in check.modules:
        assert ".visual." not in f".{module}.", module
        assert re.search(r"language_model\.layers\.\d+\.(self_attn|mlp)\.", module), module
        assert module.rsplit(".", 1)[-1] in VLLM_LORA_LEAVES, module
    assert check.modules_to_save == []
    assert check.rank <= VLLM_MAX_LORA_RANKS[-1]


def test_round_rank_to_vllm_values():
    assert [round_rank(r) for r in (1, 2, 8, 9, 24, 256, 257, 320, 321, 512)] == [1, 8, 8, 16, 32, 256, 320, 320, 512, 512]
    with pytest.raises(VllmExportError):
        round_rank(513)


def test_lora_only_students_export(lora_students, tmp_path):
    out = tmp_path / "vllm.json"
    export = export_vllm(lora_students, out)
    spec = json.loads(out.read_text())
    for a in export.adapters:
        _assert_servable(a)
    assert spec["max_lora_rank"] == 32 and spec["max_lora_rank"] in VLLM_MAX_LORA_RANKS
    assert spec["max_lora_rank"] >= max(spec["adapter_ranks"].values())
    assert spec["max_loras"] == 3
    assert [m["name"] for m in spec["lora_modules"]] == [f"scenefit-{c.value}" for c in CRITERIA]
    for m in spec["lora_modules"]:
        assert os.path.isabs(m["path"]) and (Path(m["path"]) / "adapter_config.json").is_file()
    argv = shlex.split(spec["command_line"])
    assert argv[:4] == ["vllm", "serve", spec["base_model"], "--enable-lora"]
    assert argv[argv.index("--max-lora-rank") + 1] == "32" and argv[argv.index("--max-loras") + 1] == "3"
    assert f"scenefit-size={lora_students.resolve() / 'size'}" in argv
    # the base as loadable from anywhere, and the engine bounded to one image per student request
    assert os.path.isabs(spec["base_model"]) and (Path(spec["base_model"]) / "config.json").is_file()
    assert json.loads(argv[argv.index("--limit-mm-per-prompt") + 1]) == {"image": 1, "video": 0}
    parts = spec["max_model_len_parts"]
    assert parts["image_tokens"] == 16 and parts["answer_tokens"] == 512 and parts["prompt_tokens"] > 50
    length = int(argv[argv.index("--max-model-len") + 1])
    assert length == spec["max_model_len"] and length % 256 == 0 and length >= sum(parts.values())
    assert "--mm-processor-kwargs" not in argv  # the students see images as their base does
    # how a client asks each adapter, as its scenefit_student.json records it
    from scenefit.student.metadata import read_student_meta

    for c in CRITERIA:
        asked = spec["asked_as"][f"scenefit-{c.value}"]
        assert asked == read_student_meta(lora_students / c.value).chat.model_dump(mode="json")
        assert set(asked["prompts"]) == {c.value} and "{object}" in asked["prompts"][c.value]


def test_modules_to_save_refused_unless_forced(head_students, tmp_path):
    with pytest.raises(VllmExportError, match="modules_to_save"):
        export_vllm(head_students, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    r = runner.invoke(app, ["export-vllm", "--students", str(head_students), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "lm_head" in r.stderr
    r = runner.invoke(app, ["export-vllm", "--students", str(head_students), "--out", str(tmp_path / "x.json"), "--force"])
    assert r.exit_code == 0, r.output
    assert "warning" in r.stderr and r.stdout.strip().startswith("vllm serve ")
    spec = json.loads((tmp_path / "x.json").read_text())
    assert spec["forced"] is True and set(spec["problems"]) == {f"scenefit-{c.value}" for c in CRITERIA}


def _retarget(src: Path, dst: Path, rename) -> Path:
    """A copy of an adapter folder whose weight names are rewritten (to fake other targets)."""
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name != "adapter_model.safetensors":
            (dst / f.name).write_bytes(f.read_bytes())
    tensors = load_file(str(src / "adapter_model.safetensors"))
    save_file({rename(k): v for k, v in tensors.items()}, str(dst / "adapter_model.safetensors"))
    return dst


def test_vision_and_unsupported_targets_refused(lora_students, tmp_path):
    vision = _retarget(lora_students / "location", tmp_path / "vision",
                       lambda k: k.replace("language_model.layers.0.self_attn.q_proj", "visual.blocks.0.attn.qkv"))
    check = check_adapter("v", vision)
    assert any("vision" in p for p in check.problems)
    embed = _retarget(lora_students / "location", tmp_path / "embed",
                      lambda k: k.replace("layers.1.self_attn.o_proj", "embed_tokens"))
    check = check_adapter("e", embed)
    assert any("cannot serve" in p and "embed_tokens" in p for p in check.problems)
    mlp = _retarget(lora_students / "location", tmp_path / "mlp", lambda k: k.replace("self_attn.o_proj", "mlp.down_proj"))
    _assert_servable(check_adapter("m", mlp))
    cfg = json.loads((mlp / "adapter_config.json").read_text())
    cfg["r"] = 1024
    (mlp / "adapter_config.json").write_text(json.dumps(cfg))
    assert any("rank 1024" in p for p in check_adapter("m", mlp).problems)


def test_demo_students_if_trained(repo_root):
    """The students `make demo` trained, when present, against the same limits (the demo's carry
    an lm_head copy, which vLLM refuses — so it must be reported, never silently exported)."""
    demo = Path(os.environ.get("DEMO_DIR", repo_root / "runs" / "demo")) / "students"
    if not all((demo / c.value / "adapter_config.json").is_file() for c in CRITERIA):
        pytest.skip("no demo students (run `make demo`)")
    for c in CRITERIA:
        check = check_adapter(c.value, demo / c.value)
        assert check.rank <= VLLM_MAX_LORA_RANKS[-1]
        if check.modules_to_save:
            assert any("modules_to_save" in p for p in check.problems)
        else:
            _assert_servable(check)


def test_students_that_see_smaller_images_than_their_base_carry_their_pixel_bounds(lora_students, tmp_path):
    import shutil

    students = tmp_path / "students"
    shutil.copytree(lora_students, students)
    for c in CRITERIA:
        path = students / c.value / "processor_config.json"
        cfg = json.loads(path.read_text())
        cfg["image_processor"]["size"]["longest_edge"] = 6272  # 8 image tokens instead of the base's 16
        path.write_text(json.dumps(cfg))
    spec = export_vllm(students, tmp_path / "v.json").to_json()
    argv = spec["command"]
    kwargs = json.loads(argv[argv.index("--mm-processor-kwargs") + 1])
    assert kwargs["max_pixels"] == 6272 and spec["max_model_len_parts"]["image_tokens"] == 8
