"""`scenefit annotate` with simulated teachers, resume, redo of failures, new prompts, the CLI
verbs annotate / parse / import-answers, and the annotate config.

    .venv/bin/python -m pytest tests/unit/test_annotate.py -q
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scenefit import SYNTHETIC_NOTICE
from scenefit.cli import app
from scenefit.core.config import ConfigError, packaged_configs_dir, resolve
from scenefit.core.criteria import CRITERIA, Label
from scenefit.core.records import Sample
from scenefit.data.manifest import read_manifest
from scenefit.prompts import teacher_prompt
from scenefit.teachers.annotate import annotate, annotate_async
from scenefit.teachers.config import AnnotateConfig
from scenefit.teachers.store import FAILED, AnnotationStore
from scenefit.testbed.simulated_backend import find_world_dir

PERSONAS = ("qwen72b-sim", "molmo72b-sim", "internvl38b-sim")
N = 24


def sim_config(**kw) -> AnnotateConfig:
    teachers = [{"name": p, "backend": "simulated", "persona": p, "concurrency": 4} for p in PERSONAS]
    return AnnotateConfig(teachers=teachers, progress=False, commit_every=5, **kw)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from scenefit.testbed.world import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world") / "world"
    generate_world(WorldConfig(n=N, seed=3, originals=False), out)
    return out


@pytest.fixture(scope="module")
def samples(world) -> list[Sample]:
    s, errors = read_manifest(world / "manifest.parquet")
    assert not errors and len(s) == N
    return s


def test_three_simulated_teachers_store_three_answers_per_sample(world, samples, tmp_path):
    db = tmp_path / "ann.sqlite"
    summary = annotate(samples, sim_config(), db, manifest_path=world / "manifest.parquet")
    assert {t: v.stored for t, v in summary.teachers.items()} == {p: N for p in PERSONAS}
    with AnnotationStore(db) as store:
        df = store.to_frame()
    assert len(df) == 3 * N
    assert (df.groupby("sample_id")["teacher"].nunique() == 3).all()
    assert set(df["sample_id"]) == {s.id for s in samples}
    assert set(df["prompt_hash"]) == {teacher_prompt().hash}
    assert (df["backend"] == "simulated").all() and df["model_id"].str.contains("simulated").all()
    assert df["raw"].notna().all() and (df["status"] != FAILED).all()
    dec = json.loads(df["decoding"].iloc[0])
    assert dec == {"temperature": 0.0, "max_tokens": 512, "seed": 0}


def test_stored_labels_are_the_personas_beliefs(world, samples, tmp_path):
    """The parser reads back what each persona meant (its beliefs), through its style noise."""
    from scenefit.testbed.personas import SimulatedTeacher, load_layouts

    db = tmp_path / "ann.sqlite"
    annotate(samples, sim_config(), db, manifest_path=world / "manifest.parquet")
    layouts = load_layouts(world)
    with AnnotationStore(db) as store:
        rows = {(r["sample_id"], r["teacher"]): r for r in store.rows()}
    checked = 0
    for p in PERSONAS:
        teacher = SimulatedTeacher(p)
        for s in samples:
            meant = teacher.respond(s, layouts[s.id])
            row = rows[(s.id, p)]
            assert row["raw"] == meant.text
            for c in CRITERIA:
                got = row[f"label_{c.value}"]
                if meant.dropped != f"summary:{c.value}":
                    assert got == meant.beliefs[c].value, (p, s.id, c, meant.dropped, row["reason"])
                    checked += 1
                else:
                    assert got is None and f"no label for {c.value}" in row["reason"]
            assert row["status"] in ("ok", "partial")
    assert checked >= 3 * N * 3 * 0.9


def test_rerun_skips_done_and_new_prompt_makes_new_rows(world, samples, tmp_path):
    db = tmp_path / "ann.sqlite"
    annotate(samples, sim_config(), db, manifest_path=world / "manifest.parquet")
    again = annotate(samples, sim_config(), db, manifest_path=world / "manifest.parquet")
    assert all(t.stored == 0 and t.skipped == N for t in again.teachers.values())
    prompt = tmp_path / "mine.txt"
    prompt.write_text("Is the {object} in context? Answer in the usual format.")
    other = annotate(samples, sim_config(prompt_file=str(prompt)), db)
    assert all(t.stored == N for t in other.teachers.values())
    with AnnotationStore(db) as store:
        assert store.count() == 6 * N
        assert len(store.prompt_hashes()) == 2


def test_prompt_versions_v2_default_and_v1_selectable(world, samples, tmp_path):
    """The default packaged prompt is v2; v1 stays selectable and its answers are kept apart
    (another hash); the simulated teachers' answers parse alike under both."""
    db = tmp_path / "ann.sqlite"
    annotate(samples[:6], sim_config(), db, manifest_path=world / "manifest.parquet")
    annotate(samples[:6], sim_config(prompt_version="v1"), db, manifest_path=world / "manifest.parquet")
    with AnnotationStore(db) as store:
        df = store.to_frame()
    v1, v2 = teacher_prompt(version="v1").hash, teacher_prompt(version="v2").hash
    assert teacher_prompt().hash == v2 != v1
    assert set(df["prompt_hash"]) == {v1, v2}
    by_prompt = {h: g.set_index(["sample_id", "teacher"])["status"].sort_index() for h, g in df.groupby("prompt_hash")}
    assert len(by_prompt[v2]) == 6 * len(PERSONAS)
    assert by_prompt[v1].equals(by_prompt[v2])


def test_limit_and_only(samples, tmp_path):
    db = tmp_path / "ann.sqlite"
    s = annotate(samples, sim_config(limit=5, only=["molmo72b-sim"]), db)
    assert list(s.teachers) == ["molmo72b-sim"] and s.teachers["molmo72b-sim"].stored == 5
    with AnnotationStore(db) as store:
        assert store.count() == 5


def test_failures_are_recorded_skipped_on_rerun_and_redone_on_request(world, samples, tmp_path):
    """A sample the persona cannot answer (no truth, no layout) is stored as failed, with reason."""
    db = tmp_path / "ann.sqlite"
    orphan = Sample(id="orphan-1", image=samples[0].image, object="zebra", box=(1, 1, 20, 20))
    batch = samples[:4] + [orphan]
    s1 = annotate(batch, sim_config(), db, manifest_path=world / "manifest.parquet")
    assert all(t.failed_by_reason == {"simulated": 1} and t.stored == 5 for t in s1.teachers.values())
    with AnnotationStore(db) as store:
        fails = store.to_frame().query("status == @FAILED")
        assert set(fails["sample_id"]) == {"orphan-1"} and len(fails) == 3
        assert fails["raw"].isna().all() and fails["reason"].str.startswith("simulated: ").all()
        assert store.summary()["qwen72b-sim"]["failed_by_reason"] == {"simulated": 1}
    s2 = annotate(batch, sim_config(), db, manifest_path=world / "manifest.parquet")
    assert all(t.stored == 0 and t.skipped == 5 for t in s2.teachers.values())
    # Redo: the orphan is now answerable (it carries a truth), and only it is asked again.
    fixed = Sample(id="orphan-1", image=samples[0].image, object="zebra", box=(1, 1, 20, 20),
                   truth={c: Label.IN for c in CRITERIA})
    s3 = annotate(samples[:4] + [fixed], sim_config(redo_failed=True), db, manifest_path=world / "manifest.parquet")
    assert all(t.pending == 1 and t.stored == 1 and not t.failed_by_reason for t in s3.teachers.values())
    with AnnotationStore(db) as store:
        df = store.to_frame()
        assert len(df) == 15 and (df["status"] != FAILED).all()


def test_backend_exception_loses_nothing(samples, tmp_path):
    """A backend that raises for a whole batch: every sample is still stored, as failed."""
    from scenefit.teachers.base import Teacher, TeacherResult
    from scenefit.teachers.config import TeacherConfig

    class Broken(Teacher):
        async def answer_one(self, request):
            if request.sample.id == samples[1].id:
                raise RuntimeError("backend bug")
            return TeacherResult(raw="Final decision: In-context")

    cfg = AnnotateConfig(teachers=[], progress=False)
    t = Broken(TeacherConfig(name="broken", backend="simulated"))
    with AnnotationStore(tmp_path / "a.sqlite") as store:
        s = asyncio.run(annotate_async(samples[:6], cfg, store, teachers=[t]))
        df = store.to_frame().set_index("sample_id")
    assert s.teachers["broken"].stored == 6 and len(df) == 6
    assert df.loc[samples[1].id, "status"] == FAILED and "backend bug" in df.loc[samples[1].id, "reason"]
    assert (df.drop(samples[1].id)["status"] == "partial").all()


def test_world_dir_found_beside_an_ingest_folder(tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "layout.jsonl").write_text("")
    (tmp_path / "ingest").mkdir()
    assert find_world_dir(tmp_path / "ingest" / "manifest.parquet") == tmp_path / "world"
    assert find_world_dir(tmp_path / "world" / "manifest.parquet") == tmp_path / "world"
    assert find_world_dir(None) is None


def test_config_validation():
    with pytest.raises(ValueError, match="unique"):
        AnnotateConfig(teachers=[{"name": "a", "backend": "simulated"}, {"name": "a", "backend": "simulated"}])
    with pytest.raises(ValueError, match="base_urls"):
        AnnotateConfig(teachers=[{"name": "a", "backend": "openai", "model": "m"}])
    with pytest.raises(ValueError, match="needs `model`"):
        AnnotateConfig(teachers=[{"name": "a", "backend": "transformers"}])
    with pytest.raises(ValueError, match="unknown teacher"):
        AnnotateConfig(teachers=[{"name": "a", "backend": "simulated"}], only=["b"])
    with pytest.raises(ConfigError):
        resolve("annotate", overrides={"teachers": [{"name": "a", "backend": "simulated", "colour": 1}]})


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_project_configs_have_three_teachers(repo_root, name):
    cfg = resolve("annotate", packaged_configs_dir() / name)
    assert len(cfg.teachers) == 3


# --- the CLI verbs ----------------------------------------------------------------------

runner = CliRunner()


def test_cli_annotate_json_summary_and_notice(world, tmp_path, repo_root):
    db = tmp_path / "cli.sqlite"
    args = ["annotate", str(world / "manifest.parquet"), "--db", str(db), "--config", str(packaged_configs_dir() / "demo.yaml"),
            "--no-progress", "--json", "--limit", "6"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["notice"] == SYNTHETIC_NOTICE and out["samples"] == 6
    assert {k: v["stored"] for k, v in out["teachers"].items()} == {p: 6 for p in PERSONAS}
    with AnnotationStore(db) as store:
        assert store.count() == 18 and store.meta()["notice"] == SYNTHETIC_NOTICE
    res2 = runner.invoke(app, args + ["--teacher", "qwen72b-sim"])
    assert res2.exit_code == 0
    assert json.loads(res2.stdout)["teachers"]["qwen72b-sim"]["skipped"] == 6


def test_cli_annotate_errors_are_clear(tmp_path, repo_root):
    res = runner.invoke(app, ["annotate", str(tmp_path / "nope.parquet"), "--db", str(tmp_path / "a.sqlite"),
                              "--config", str(packaged_configs_dir() / "demo.yaml")])
    assert res.exit_code == 2 and "manifest not found" in res.output
    res = runner.invoke(app, ["annotate", str(tmp_path / "nope.parquet"), "--db", str(tmp_path / "a.sqlite")])
    assert res.exit_code == 2 and "no teachers configured" in res.output


def test_cli_parse_text_file_json(tmp_path):
    f = tmp_path / "answer.txt"
    f.write_text("**Location:** in context\n- Size: OUT-OF-CONTEXT\nCo-occurrence: In-context\nFinal decision: Out-of-context")
    res = runner.invoke(app, ["parse", "--text-file", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert set(out) == {"labels", "analyses", "final", "final_derived", "status", "reason"}
    assert out["labels"] == {"location": "In-context", "size": "Out-of-context", "co_occurrence": "In-context"}
    assert out["final"] == "Out-of-context" and out["status"] == "partial" and "no analysis" in out["reason"]


def test_cli_parse_db_reparses(samples, tmp_path):
    db = tmp_path / "a.sqlite"
    annotate(samples[:3], sim_config(), db)
    with AnnotationStore(db) as store:  # a row parsed by an "older parser"
        store._conn.execute("UPDATE annotations SET status='unparseable', final=NULL WHERE teacher='qwen72b-sim'")
    res = runner.invoke(app, ["parse", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    counts = json.loads(res.stdout)
    assert counts["rows"] == 9 and counts["changed"] == 3
    with AnnotationStore(db) as store:
        assert "unparseable" not in set(store.to_frame()["status"])
    assert runner.invoke(app, ["parse"]).exit_code == 2


def test_import_answers_csv_paper_layout(tmp_path):
    ans = "Analysis:\nLocation: ok.\nCo-occurrence: ok.\nSize: ok.\nSummary:\nLocation: In-context\nCo-occurrence: In-context\nSize: In-context\nFinal decision: In-context."
    import csv

    f = tmp_path / "qwen.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["coco_index", "response"])
        w.writerow([101, ans])
        w.writerow([102, ans.replace("Size: In-context\nFinal decision: In-context.", "Size: Out-of-context\nFinal decision: Out-of-context.")])
        w.writerow([103, ""])
        w.writerow(["", ans])
        w.writerow([101, "duplicate"])
    db = tmp_path / "imp.sqlite"
    res = runner.invoke(app, ["import-answers", str(f), "--teacher", "qwen72b", "--db", str(db), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == 5 and out["stored"] == 3 and len(out["errors"]) == 2
    assert out["by_status"] == {"ok": 2, "empty": 1}
    with AnnotationStore(db) as store:
        df = store.to_frame().set_index("sample_id")
    assert list(df.index) == ["101", "102", "103"]
    assert df.loc["102", "label_size"] == "Out-of-context" and df.loc["102", "final"] == "Out-of-context"
    assert (df["prompt_hash"] == "imported").all() and (df["backend"] == "import").all()
    assert df.loc["103", "status"] == "empty" and df.loc["103", "raw"] == ""
    again = json.loads(runner.invoke(app, ["import-answers", str(f), "--teacher", "qwen72b", "--db", str(db), "--json"]).stdout)
    assert again["stored"] == 0 and again["already_stored"] == 3


def test_import_answers_jsonl_and_bad_columns(tmp_path):
    f = tmp_path / "molmo.jsonl"
    f.write_text("\n".join([
        json.dumps({"sample_id": "a", "raw": "Location: In-context\nSize: In-context\nCo-occurrence: Out-of-context\nFinal decision: Out-of-context"}),
        "not json",
        json.dumps({"sample_id": "b", "raw": "**Final decision:** In-context"}),
    ]) + "\n")
    db = tmp_path / "imp.sqlite"
    res = runner.invoke(app, ["import-answers", str(f), "--teacher", "molmo", "--db", str(db), "--prompt-hash", "paper", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["stored"] == 2 and out["errors"][0]["row"] == 2
    with AnnotationStore(db) as store:
        df = store.to_frame().set_index("sample_id")
    assert df.loc["a", "final"] == "Out-of-context" and df.loc["b", "status"] == "partial"
    assert set(df["prompt_hash"]) == {"paper"}
    g = tmp_path / "x.csv"
    g.write_text("foo,bar\n1,2\n")
    res = runner.invoke(app, ["import-answers", str(g), "--teacher", "t", "--db", str(db)])
    assert res.exit_code == 2 and "no sample id column" in " ".join(res.output.split())


def test_waiting_answers_are_committed_without_a_next_answer(samples, tmp_path):
    """A slow teacher: answers received are committed on time, not when the next one arrives."""
    from scenefit.teachers.base import Teacher, TeacherResult
    from scenefit.teachers.config import TeacherConfig

    db = tmp_path / "a.sqlite"
    seen_while_blocked: list[int] = []

    class SlowSecond(Teacher):
        async def answer_one(self, request):
            if request.sample.id == samples[1].id:  # the first answer is in; wait for its commit
                with AnnotationStore(db) as other:
                    for _ in range(200):
                        if other.count():
                            break
                        await asyncio.sleep(0.02)
                    seen_while_blocked.append(other.count())
            return TeacherResult(raw="Final decision: In-context")

    cfg = AnnotateConfig(teachers=[], progress=False, commit_every=100, commit_interval_s=0.1)
    t = SlowSecond(TeacherConfig(name="slow", backend="simulated", concurrency=1))
    with AnnotationStore(db) as store:
        asyncio.run(annotate_async(samples[:2], cfg, store, teachers=[t]))
        assert store.count() == 2
    assert seen_while_blocked == [1]
