"""Both servers take their settings the one way (issue 28.2): defaults < YAML section < --set <
flags; `serve` reaches the predict section with ``--set predict.KEY=VALUE``, `serve-teacher` has a
section of its own (``serve_teacher``).

    .venv/bin/python -m pytest tests/unit/test_server_settings.py -q
"""

from __future__ import annotations

from typer.testing import CliRunner

from scenefit.cli import app


def test_serve_applies_set_to_both_of_its_sections(tmp_path, monkeypatch):
    import scenefit.serve.app as serve_app

    seen = {}
    monkeypatch.setattr(serve_app, "serve_students", lambda folder, pcfg, cfg, token, on_ready=None:
                        seen.update(pcfg=pcfg, cfg=cfg))
    (tmp_path / "students").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text("serve:\n  max_concurrency: 40\npredict:\n  max_new_tokens: 20\n  batch_size: 4\n")
    r = CliRunner().invoke(app, ["serve", "--students", str(tmp_path / "students"), "--config", str(config),
                                 "--set", "max_concurrency=5", "--set", "predict.max_new_tokens=7",
                                 "--set", "max_batch=2"])
    assert r.exit_code == 0, r.output
    assert (seen["cfg"].max_concurrency, seen["cfg"].max_batch) == (5, 2)
    assert (seen["pcfg"].max_new_tokens, seen["pcfg"].batch_size) == (7, 4)  # --set over YAML, YAML over defaults
    r = CliRunner().invoke(app, ["serve", "--students", str(tmp_path / "students"), "--set", "predict.no_such=1"])
    assert r.exit_code == 2 and "[predict] no_such: not a setting" in " ".join(r.output.split()), r.output


def test_serve_teacher_reads_its_section_and_its_flags_win(tmp_path, monkeypatch):
    import scenefit.serve.openai_server as openai_server

    seen = {}
    monkeypatch.setattr(openai_server, "teacher_app", lambda cfg, name: seen.update(cfg=cfg, name=name) or object())
    monkeypatch.setattr(openai_server, "run_app", lambda api, **kw: seen.update(run=kw))
    (tmp_path / "model").mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(f"serve_teacher:\n  model: {tmp_path / 'model'}\n  max_prompt_tokens: 9000\n  max_batch: 4\n")
    r = CliRunner().invoke(app, ["serve-teacher", "--config", str(config), "--set", "max_concurrency=6",
                                 "--max-batch", "2", "--port", "0"])
    assert r.exit_code == 0, r.output
    cfg = seen["cfg"]
    assert (cfg.max_prompt_tokens, cfg.max_concurrency, cfg.max_batch) == (9000, 6, 2)
    assert seen["name"] == "model" and seen["run"]["port"] == 0 and seen["run"]["header_timeout_s"] == 30.0
    r = CliRunner().invoke(app, ["serve-teacher", "--model", str(tmp_path / "model"), "--set", "max_new_tokens=5000"])
    assert r.exit_code == 2 and "max_new_tokens (5000) exceeds max_tokens_limit (4096)" in " ".join(r.output.split())
