"""Configs and the command line: every shipped config validates, every field is documented,
precedence is defaults < YAML < --set < flags, and every verb answers --help."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import SECTIONS, ConfigError, load_project, packaged_configs_dir, resolve, section_class

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((packaged_configs_dir()).glob("*.yaml"))
runner = CliRunner()


def _fields(model, prefix=""):
    from pydantic import BaseModel

    for name, info in model.model_fields.items():
        yield f"{prefix}{name}", info
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _fields(ann, f"{prefix}{name}.")


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_field_is_documented(section):
    cls = section_class(section)
    missing = [n for n, info in _fields(cls) if not (info.description or "").strip()]
    assert not missing, f"[{section}] fields without a description: {missing}"
    cls()  # defaults alone must validate


def test_shipped_configs_exist():
    names = {p.name for p in SHIPPED}
    assert {"demo.yaml", "paper.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    sections = load_project(path)
    assert sections, f"{path.name} has no sections"


def test_paper_config_carries_the_paper_setup():
    import yaml

    raw = yaml.safe_load((packaged_configs_dir() / "paper.yaml").read_text())
    flat = yaml.safe_dump(raw)
    for fact in ("Qwen/Qwen2.5-VL-72B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", "20000", "2000"):
        assert fact in flat, f"paper.yaml does not mention {fact}"


def test_precedence_defaults_yaml_flags(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tiny_model:\n  seed: 5\n  hidden_size: 64\n")
    assert resolve("tiny_model").seed == 0  # class default
    assert resolve("tiny_model", cfg).seed == 5  # YAML over default
    r = resolve("tiny_model", cfg, {"seed": 7, "num_layers": None})
    assert (r.seed, r.hidden_size, r.num_layers) == (7, 64, 2)  # flag over YAML; None = not given


def test_config_errors_name_file_section_and_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tiny_model:\n  hiden_size: 64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*tiny_model.*hiden_size: not a setting.*known: .*hidden_size"):
        resolve("tiny_model", cfg)
    with pytest.raises(ConfigError, match=r"predict: not a setting of this section \(known: students, base"):
        resolve("predict", overrides={"predict.batch_size": 4})  # --set with the section's name in front
    cfg.write_text("nonsense: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        resolve("tiny_model", cfg)
    with pytest.raises(ConfigError, match="not found"):
        resolve("tiny_model", tmp_path / "missing.yaml")


def test_cli_reports_config_error_without_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tiny_model:\n  num_layers: zero\n")
    res = runner.invoke(app, ["tiny-model", str(tmp_path / "m"), "--config", str(cfg)])
    assert res.exit_code == 2
    assert "num_layers" in res.output and "Traceback" not in res.output


def test_brackets_in_help_and_errors_are_printed_not_read_as_markup(tmp_path):
    help_text = " ".join(runner.invoke(app, ["split", "--help"]).output.split())
    assert "[default: 0]" in help_text  # a config-backed flag shows its default
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "w"), "--set", "bogus=1"])
    assert res.exit_code == 2
    assert "[world] bogus: not a setting" in " ".join(res.output.split())


def test_bare_command_prints_help():
    res = runner.invoke(app, [])
    assert "Usage" in res.output and "tiny-model" in res.output


def _verbs():
    return sorted(c.name or c.callback.__name__ for c in app.registered_commands)


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_help(verb):
    res = runner.invoke(app, [verb, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and len(res.output) > 200
    # at least one worked example, taken from the verb's entry-file docstring
    assert "Examples:" in res.output and f"scenefit {verb} " in " ".join(res.output.split())


def test_env_reports_stack(tmp_path):
    import json

    res = runner.invoke(app, ["env", "--json"])
    assert res.exit_code == 0
    info = json.loads(res.stdout)
    assert info["packages"]["torch"].startswith("2.13.0") and info["device"]["type"] in ("cpu", "cuda")


def test_serve_refuses_flags_its_mode_would_ignore(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    res = runner.invoke(app, ["serve", "--openai", "--model", str(model), "--api-token", "secret"])
    assert res.exit_code == 2
    assert "--api-token does not apply with --openai" in " ".join(res.output.split())  # never an open server by surprise
    res = runner.invoke(app, ["serve", "--students", str(tmp_path), "--max-new-tokens", "5", "--model-name", "x"])
    assert res.exit_code == 2
    assert "--model-name, --max-new-tokens do not apply without --openai" in " ".join(res.output.split())


def test_the_teacher_server_is_its_own_verb_and_serve_openai_names_it(tmp_path, monkeypatch):
    import scenefit.cli.serve_teacher as teacher_cli

    calls = []
    monkeypatch.setattr(teacher_cli, "serve_teacher", lambda model, **kw: calls.append((model, kw)))
    res = runner.invoke(app, ["serve-teacher", "--help"])
    assert res.exit_code == 0
    assert "--model" in res.output and "--max-tokens-limit" in res.output and "--api-token" not in res.output
    res = runner.invoke(app, ["serve", "--help"])
    assert "--openai" not in res.output and "--model-name" not in res.output  # the students' verb shows its own flags
    model = tmp_path / "my model"
    model.mkdir()
    res = runner.invoke(app, ["serve-teacher", "--model", str(model), "--port", "0", "--max-new-tokens", "9"])
    assert res.exit_code == 0, res.output
    assert calls[-1] == (model, {"model_name": None, "host": None, "port": 0, "max_batch": None, "max_new_tokens": 9,
                                 "max_tokens_limit": None, "device": None, "dtype": None, "insecure_no_auth": False,
                                 "config": None, "sets": None})
    # the deprecated alias prints the new command and runs the same server with the same flags
    res = runner.invoke(app, ["serve", "--openai", "--port", "0", "--model", str(model), "--max-new-tokens", "9"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.stderr.split())
    assert "deprecated" in said and f"scenefit serve-teacher --model '{model}' --port 0 --max-new-tokens 9" in said
    assert calls[-1] == (model, {"port": 0, "max_new_tokens": 9})


def test_serve_names_the_missing_extra(monkeypatch):
    import scenefit.cli.common as common

    monkeypatch.setattr(common, "SERVE_EXTRA", (*common.SERVE_EXTRA, "scenefit-no-such-dist"))
    res = runner.invoke(app, ["serve", "--demo"])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "missing: scenefit-no-such-dist" in out and "pip install 'scenefit[serve]'" in out


def test_wrong_files_get_clear_errors_and_are_left_alone(tmp_path):
    import pandas as pd

    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    res = runner.invoke(app, ["parse", "--db", str(text)])
    assert res.exit_code == 2 and "not a scenefit answer store" in " ".join(res.output.split())
    assert text.read_text() == "not a database\n"  # never overwritten
    table = tmp_path / "manifest.parquet"
    pd.DataFrame({"id": ["a", "b"], "object": ["cow", "dog"]}).to_parquet(table)
    res = runner.invoke(app, ["split", str(table), "--out", str(tmp_path / "split")])
    assert res.exit_code == 2 and "lacks column(s) final" in " ".join(res.output.split())
    for argv in (["synth", "--n", "2", "--out", str(text)], ["tiny-model", str(text)]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 2 and "is a file" in res.output, argv


def test_evaluate_runs_the_students_with_the_predict_settings_of_the_same_file(tmp_path):
    """evaluate nests the predict settings: keys it leaves out come from the file's `predict`
    section (box width, attention kernel, prefix forcing included); its own keys win; flags and
    --set reach them by their dotted name."""
    from scenefit.core.config import resolve

    f = tmp_path / "c.yaml"
    f.write_text("predict:\n  batch_size: 7\n  box_width: 3\n  force_decision_prefix: false\n"
                 "  attn_implementation: sdpa\n  max_new_tokens: 64\n"
                 "evaluate:\n  split: val\n  predict:\n    max_new_tokens: 48\n")
    cfg = resolve("evaluate", f)
    assert cfg.split == "val" and cfg.predict.max_new_tokens == 48
    assert (cfg.predict.batch_size, cfg.predict.box_width, cfg.predict.force_decision_prefix,
            cfg.predict.attn_implementation) == (7, 3, False, "sdpa")
    cfg = resolve("evaluate", f, {"predict.batch_size": 2})
    assert cfg.predict.batch_size == 2 and cfg.predict.box_width == 3
    assert resolve("predict", f).max_new_tokens == 64  # the predict section itself is untouched
