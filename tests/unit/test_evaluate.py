"""The evaluate runner end to end on a small synthetic world with stub predictors (answers
known in advance, so every number can be checked), the shortcut test on the world's
originals, the metrics.json contract and the CLI.

    .venv/bin/python -m pytest tests/unit/test_evaluate.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import CRITERIA, Label, fuse
from scenefit.evaluate.config import EvaluateConfig
from scenefit.evaluate.metrics import wilson_interval
from scenefit.evaluate.runner import evaluate_dirs
from scenefit.student.answer import parse_student_answer, render_student_answer

I, O = Label.IN, Label.OUT
CONTRACT_KEYS = ("accuracy", "f1_out", "macro_f1", "unparseable", "baseline_accuracy", "accuracy_vs_truth")


def _flip(lab: Label) -> Label:
    return I if lab is O else O


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from scenefit.testbed import WorldConfig, generate_world

    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(n=36, seed=11, samples_per_group=3), out)
    return out


@pytest.fixture(scope="module")
def datasets(world, tmp_path_factory) -> Path:
    """DATA/<criterion>/test.parquet from the world: teacher label = truth except every 7th sample."""
    from scenefit.core.parquet_io import write_table
    from scenefit.data.datasets import DATASET_COLUMNS
    from scenefit.data.manifest import read_manifest

    samples, errors = read_manifest(world / "manifest.parquet")
    assert not errors
    out = tmp_path_factory.mktemp("datasets")
    for c in CRITERIA:
        rows = []
        for k, s in enumerate(samples):
            truth = s.truth[c]
            teacher = _flip(truth) if k % 7 == 3 else truth
            final = fuse(_flip(s.truth[x]) if k % 7 == 3 else s.truth[x] for x in CRITERIA)
            sentence = f"The {s.object} floats in the sky." if teacher is O else f"The {s.object} stands on the ground."
            rows.append({
                "id": s.id, "group": s.group, "image": s.image, "object": s.object, "box": list(s.box),
                "criterion": c.value, "label": teacher.value, "analysis": sentence, "prompt": "p", "system": "s",
                "target": render_student_answer(c, teacher, sentence), "prompt_version": "v",
                "truth": truth.value, "final": final.value, "scene": s.scene, "synthetic": True,
            })
        write_table(pd.DataFrame(rows, columns=DATASET_COLUMNS), out / c.value / "test.parquet")
    return out


class StubPredictor:
    """Answers (real Prediction objects, as scenefit.predict returns them) from the dataset rows
    it was told about: the teacher's label, wrong on chosen ids, unreadable text on others; on
    originals (unknown ids) in-context except for one object category. ``fail_ids`` raise like
    a crashing batch, ``error_ids`` come back as Predictions with an error, as the real one does."""

    def __init__(self, teacher: dict, wrong=frozenset(), garbled=frozenset(), out_object=None,
                 fail_ids=frozenset(), error_ids=frozenset()):
        self.teacher, self.wrong, self.garbled, self.out_object = teacher, wrong, garbled, out_object
        self.fail_ids, self.error_ids = fail_ids, error_ids
        self.calls = []

    def predict(self, items, explain=False, criteria=None):
        from scenefit.predict import CriterionResult, Prediction

        self.calls.append((len(items), explain, tuple(criteria)))
        if any(s.id in self.fail_ids for s in items):
            raise OSError(f"cannot read image of {[s.id for s in items if s.id in self.fail_ids]}")
        preds = []
        for s in items:
            if s.id in self.error_ids:
                preds.append(Prediction(id=s.id, error={"code": "missing_image", "message": f"{s.image}: not found"}))
                continue
            per = {}
            for c in criteria:
                lab = self.teacher.get((c.value, s.id))
                if lab is None:  # an original: in-context unless it is the shortcut category
                    lab = O if s.object == self.out_object else I
                if (c.value, s.id) in self.wrong:
                    lab = _flip(lab)
                p_out = 0.8 if lab is O else 0.2
                if not explain:
                    per[c] = CriterionResult(c, lab, max(p_out, 1 - p_out), p_out, lab)
                    continue
                text = render_student_answer(c, lab, "It floats in the sky." if lab is O else "It stands on the ground.")
                if (c.value, s.id) in self.garbled:
                    text = "I am not sure what to say."
                ans = parse_student_answer(text, c)
                # like the real predictor: an unreadable answer falls back to the logits' label
                per[c] = CriterionResult(c, ans.label or lab, 0.8, p_out, lab, ans.analysis, text, ans.label, ans.status)
            preds.append(Prediction(id=s.id, criteria=per))
        return preds


def _teacher_map(datasets: Path) -> dict:
    out = {}
    for c in CRITERIA:
        df = pd.read_parquet(datasets / c.value / "test.parquet")
        out.update({(c.value, i): Label(lab) for i, lab in zip(df["id"], df["label"])})
    return out


def test_runner_numbers_contract_and_shortcut(world, datasets, tmp_path):
    teacher = _teacher_map(datasets)
    ids = list(pd.read_parquet(datasets / "location" / "test.parquet")["id"])
    wrong = {("location", ids[0]), ("location", ids[1]), ("size", ids[2])}
    garbled = {("co_occurrence", ids[4])}
    originals = pd.read_parquet(world / "originals" / "manifest.parquet")
    out_object = originals["object"].value_counts().index[0]  # the shortcut category
    student = StubPredictor(teacher, wrong=wrong, garbled=garbled, out_object=out_object)
    # the "untrained base" says in-context for everything
    base = StubPredictor({k: I for k in teacher})
    cfg = EvaluateConfig(originals=str(world / "originals" / "manifest.parquet"), gallery_size=5, predict={"batch_size": 4})
    metrics, json_path, html_path = evaluate_dirs("unused", datasets, tmp_path / "report", cfg,
                                                  student_predictor=student, baseline_predictor=base)
    saved = json.loads(json_path.read_text())
    assert saved["synthetic"] is True and saved["notice"] == SYNTHETIC_NOTICE
    _headline_fits_80_columns(saved)
    _demo_line_reads_the_report(saved, tmp_path)
    n = len(ids)
    for c in ("location", "size", "co_occurrence", "fused"):
        for key in CONTRACT_KEYS:
            assert key in saved[c], (c, key)
    assert saved["location"]["accuracy"] == pytest.approx((n - 2) / n)
    assert saved["size"]["accuracy"] == pytest.approx((n - 1) / n)
    assert saved["co_occurrence"]["unparseable"] == 1
    assert saved["co_occurrence"]["accuracy"] == pytest.approx((n - 1) / n)  # counted wrong
    assert saved["co_occurrence"]["accuracy_parseable"] == pytest.approx(1.0)
    # baseline answers In everywhere: its accuracy is the teacher's In share
    df = pd.read_parquet(datasets / "size" / "test.parquet")
    assert saved["size"]["baseline_accuracy"] == pytest.approx((df["label"] == I.value).mean())
    # vs truth: the teacher is wrong on every 7th sample, so is the faithful student there
    truth_acc = (df["label"] == df["truth"]).mean()
    assert saved["size"]["teacher_accuracy_vs_truth"] == pytest.approx(truth_acc)
    # every headline accuracy has its Wilson interval and the majority-class rate beside it
    in_share = (df["label"] == I.value).mean()
    assert saved["size"]["majority_rate"] == pytest.approx(max(in_share, 1 - in_share))
    assert saved["size"]["baseline_balanced_accuracy"] == pytest.approx(0.5)  # a constant answer
    assert saved["size"]["baseline_accuracy_ci95"] == pytest.approx(wilson_interval(int((df["label"] == I.value).sum()), n))
    truth_in = (df["truth"] == I.value).mean()
    assert saved["size"]["majority_rate_vs_truth"] == pytest.approx(max(truth_in, 1 - truth_in))
    n_truth_right = int((df["label"] == df["truth"]).sum())
    assert saved["size"]["teacher_accuracy_vs_truth_ci95"] == pytest.approx(wilson_interval(n_truth_right, n))
    for key in ("accuracy_ci95", "balanced_accuracy", "balanced_accuracy_ci95", "accuracy_vs_truth_ci95",
                "balanced_accuracy_vs_truth", "macro_f1_vs_truth"):
        assert saved["fused"][key] is not None, key
    assert saved["size"]["accuracy_vs_truth"] < truth_acc + 1e-9
    # fused against the teacher's final decision, over the ids all three criteria share
    assert saved["fused"]["n"] == n and saved["fused"]["baseline_accuracy"] is not None
    # shortcut: in-context share = 1 - share of the chosen category among the originals
    expected = 1 - (originals["object"] == out_object).mean()
    sc = saved["shortcut"]
    assert sc["available"] and sc["n"] == len(originals)
    # every scene of this world is in the evaluated split, so every original is used
    assert sc["selection"] == {"unseen_scenes_only": True, "given": len(originals), "used": len(originals),
                               "rule": sc["selection"]["rule"]}
    assert f"of {len(originals)} originals, the {len(originals)} whose scene is in the evaluated split" in html_path.read_text()
    for c in ("location", "size", "co_occurrence", "fused"):
        assert sc["in_context_share"][c] == pytest.approx(expected)
    assert sc["robust"]["location"] is bool(expected >= 0.95)
    assert all(truth == I.value for col in ("truth_location", "truth_size", "truth_co_occurrence")
               for truth in originals[col])
    # reasoning: the stub's sentences agree with its labels
    assert saved["location"]["reasoning"]["consistent_share"] == pytest.approx(1.0)
    assert saved["location"]["calibration"]["n"] == n
    # every answer kept; explain on; one criterion per call on the test split
    answers = pd.read_parquet(tmp_path / "report" / "answers.parquet")
    assert set(answers["model"]) == {"student", "baseline", "shortcut"}
    assert (answers["model"] == "student").sum() == 3 * n
    split_calls = [call for call in student.calls if len(call[2]) == 1]
    shortcut_calls = [call for call in student.calls if len(call[2]) == 3]
    assert split_calls and all(call[1] is True for call in split_calls)  # explanations for the reasoning metrics
    assert shortcut_calls and all(call[1] is False for call in shortcut_calls)  # decisions only
    assert saved["explain"] == {"student": True, "baseline": True, "shortcut": False}
    # the garbled answer came back with the logits' label, but evaluation saw it unparseable
    garbled_row = answers[(answers["criterion"] == "co_occurrence") & (answers["id"] == ids[4]) & (answers["model"] == "student")]
    assert garbled_row["label"].isna().all() and (garbled_row["status"] == "no_decision").all()
    # the gallery shows the most confident errors, with thumbnails
    html = html_path.read_text()
    assert html.count('class="card"') == 4  # 3 wrong + 1 unparseable (< gallery_size)
    assert SYNTHETIC_NOTICE in html and "data:image/png;base64," in html


def test_failing_samples_are_left_out_and_reported(datasets, tmp_path):
    teacher = _teacher_map(datasets)
    ids = list(pd.read_parquet(datasets / "size" / "test.parquet")["id"])
    student = StubPredictor(teacher, fail_ids={ids[3]}, error_ids={ids[8]})
    cfg = EvaluateConfig(baseline=False, criteria=["size"], predict={"batch_size": 2})
    metrics, _, _ = evaluate_dirs("unused", datasets, tmp_path, cfg, student_predictor=student)
    assert metrics["size"]["n"] == len(ids) - 2 and metrics["size"]["accuracy"] == 1.0
    assert metrics["failed"] == 2 and "fused" not in metrics  # one criterion: no fused decision
    errors = {e["id"]: e for e in map(json.loads, (tmp_path / "errors.jsonl").read_text().splitlines())}
    assert "cannot read image" in errors[ids[3]]["message"]
    assert errors[ids[8]]["code"] == "missing_image" and errors[ids[8]]["message"]
    assert metrics["size"]["baseline_accuracy"] is None
    assert metrics["shortcut"]["available"] is False


def test_limit_fast_path_and_missing_dataset(datasets, tmp_path):
    from scenefit.evaluate.runner import EvaluateError

    teacher = _teacher_map(datasets)
    cfg = EvaluateConfig(limit=5, baseline=False, explain=False)
    metrics, _, _ = evaluate_dirs("unused", datasets, tmp_path, cfg, student_predictor=StubPredictor(teacher))
    assert all(metrics[c.value]["n"] == 5 and metrics[c.value]["accuracy"] == 1.0 for c in CRITERIA)
    # decision only: no sentences, so every answer is "no_analysis" for the reasoning rule
    assert metrics["size"]["reasoning"]["no_analysis"] == 5
    with pytest.raises(EvaluateError, match="val.parquet"):
        evaluate_dirs("unused", datasets, tmp_path, EvaluateConfig(split="val"), student_predictor=StubPredictor(teacher))


def test_config_section_validates():
    cfg = EvaluateConfig(criteria=["Co-occurrence", "size"])
    assert cfg.criteria == ["co_occurrence", "size"]
    with pytest.raises(ValueError):
        EvaluateConfig(criteria=["colour"])
    with pytest.raises(ValueError):
        EvaluateConfig(shortcut_threshold=1.5)
    for name, field in EvaluateConfig.model_fields.items():
        assert field.description, name


def test_cli_reports_bad_folders(tmp_path):
    from typer.testing import CliRunner

    from scenefit.cli import app

    res = CliRunner().invoke(app, ["evaluate", "--students", str(tmp_path / "nope"), "--data", str(tmp_path),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "--students" in res.output and "not a folder" in res.output


def test_default_originals_is_the_world_beside_the_datasets(tmp_path):
    from scenefit.evaluate.runner import default_originals

    (tmp_path / "datasets").mkdir()
    assert default_originals(tmp_path / "datasets") is None
    target = tmp_path / "world" / "originals" / "manifest.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"")
    assert default_originals(tmp_path / "datasets") == target.resolve()


def test_shortcut_uses_only_originals_of_scenes_in_the_evaluated_split():
    from scenefit.core.records import Sample
    from scenefit.evaluate.shortcut import originals_in_split

    def original(group):
        return Sample(id=f"{group}-orig", image="x.png", object="cow", box=(1, 1, 5, 5), group=group)

    given = [original(g) for g in ("scene1", "scene2", "scene3", "scene4")]
    kept, how = originals_in_split(given, ["scene3", "scene1", None, "scene9"])
    assert [s.group for s in kept] == ["scene1", "scene3"]  # scenes 2 and 4 were training scenes
    assert how["unseen_scenes_only"] and (how["given"], how["used"]) == (4, 2)
    # no groups to match (real originals without them): all are used, and the metrics say why
    kept, how = originals_in_split([Sample(id="o", image="x.png", object="cow", box=(1, 1, 5, 5))], ["scene1"])
    assert len(kept) == 1 and how["unseen_scenes_only"] is False and "all originals used" in how["reason"]


def _headline_fits_80_columns(metrics: dict) -> None:
    """The CLI headline (also the demo's last lines) reads on an 80-column terminal: per
    criterion and reference, balanced accuracy and accuracy each with an interval, the
    majority-class rate beside them, nothing cut."""
    import io

    from rich.console import Console

    import scenefit.cli.evaluate as evaluate_cli

    out = io.StringIO()
    real = evaluate_cli.console
    evaluate_cli.console = Console(file=out, width=80, color_system=None)
    try:
        evaluate_cli.print_headline(metrics)
    finally:
        evaluate_cli.console = real
    lines = out.getvalue().splitlines()
    assert lines and max(len(line) for line in lines) <= 80 and "…" not in out.getvalue()
    loc = metrics["location"]
    row = next(line for line in lines if line.startswith("location") and " truth " in line)
    lo, hi = loc["balanced_accuracy_vs_truth_ci95"]
    assert f"{100 * loc['balanced_accuracy_vs_truth']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}]" in row
    assert f"{100 * loc['majority_rate_vs_truth']:.1f}%" in row


def _demo_line_reads_the_report(metrics: dict, tmp_path) -> None:
    """`scenefit run`'s one line for the evaluate stage reads metrics.json as evaluate writes it:
    each criterion's accuracy vs truth, never its 'no summary' fallback."""
    from scenefit.pipeline.run_folder import RunFolder
    from scenefit.pipeline.stages import EVALUATE, headline

    run = tmp_path / "demo_run"
    (run / "report").mkdir(parents=True)
    (run / "report" / "metrics.json").write_text(json.dumps(metrics))
    line = headline(EVALUATE, RunFolder(run))
    assert "no summary" not in line
    for c in ("location", "size", "co_occurrence", "fused"):
        assert f"{c} {100 * metrics[c]['accuracy_vs_truth']:.1f} % (n {metrics[c]['n']})" in line


def test_headline_with_probe_and_teacher_columns_fits_80_columns():
    """The demo's headline has every column (the probe, the teacher vs the truth), the widest
    criterion name, intervals up to 100 % and a four-digit n: still nothing cut at 80 columns
    (`make demo`'s last lines, also when its output goes to a file, where rich assumes 80)."""
    block = {"n": 1000}
    for suffix, p in (("", 0.981), ("_vs_truth", 1.0)):
        block |= {f"accuracy{suffix}": p, f"accuracy{suffix}_ci95": [0.953, 1.0], f"balanced_accuracy{suffix}": p,
                  f"balanced_accuracy{suffix}_ci95": [0.95, 1.0], f"majority_rate{suffix}": 0.792,
                  f"baseline_balanced_accuracy{suffix}": 0.5, f"probe_balanced_accuracy{suffix}": 0.989}
    block["teacher_balanced_accuracy_vs_truth"] = 1.0
    metrics = {"split": "test", "synthetic": True, "criteria": ["location", "size", "co_occurrence"],
               **{name: dict(block) for name in ("location", "size", "co_occurrence", "fused")}}
    _headline_fits_80_columns(metrics)
