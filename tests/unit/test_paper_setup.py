"""The packaged paper config as the authors ran it, scaled down: per-criterion balanced student sets in the
proportions 20,000 / 2,000 / 2,000 drawn from consensus pools with no scene in two splits; the
student prompt file, system turn and image order settable and recorded; the settings the
docs/paper-setup.md table states.

    .venv/bin/python -m pytest tests/unit/test_paper_setup.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scenefit.core.config import packaged_configs_dir, parse_set, resolve
from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.data.datasets import build_student_datasets
from scenefit.data.split import balanced_split
from scenefit.student.answer import AnswerFormat
from scenefit.student.chat import StudentChat

PAPER = packaged_configs_dir() / "paper.yaml"


def consensus_pool(n: int, seed: int = 0, per_group: int = 4) -> pd.DataFrame:
    """A consensus table as `scenefit consensus` writes it: groups of samples of one scene, a label and
    the designated teacher's sentence per criterion (out of context at a different rate per criterion),
    the final decision fused from them."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        labels = {c: Label.OUT.value if rng.random() < rate else Label.IN.value
                  for c, rate in zip(CRITERIA, (0.45, 0.35, 0.55))}
        row = {"id": f"s{i:05d}", "group": f"g{i // per_group}", "image": f"images/s{i}.png", "object": "cow",
               "box": None, "scene": "farm", "synthetic": True,
               "final": Label.OUT.value if Label.OUT.value in labels.values() else Label.IN.value}
        for c, lab in labels.items():
            row[f"label_{c.value}"] = row[f"designated_{c.value}"] = lab
            row[f"analysis_{c.value}"] = f"The cow, {c.value} {lab}."
        rows.append(row)
    return pd.DataFrame(rows)


def paper_sets(pool: pd.DataFrame, *sets: str):
    """split + datasets with the paper config's sections and ``--set`` overrides (``section.key=value``)."""
    over: dict[str, list[str]] = {"split": [], "datasets": []}
    for s in sets:
        section, _, rest = s.partition(".")
        over[section].append(rest)
    split_cfg = resolve("split", PAPER, parse_set(over["split"]))
    datasets_cfg = resolve("datasets", PAPER, parse_set(over["datasets"]))
    split = balanced_split(pool, split_cfg, {"rule": "unanimous_final", "designated": "qwen2.5-vl-72b"})
    return split, build_student_datasets(split.frames, datasets_cfg, split.manifest)


def _check_sets(split, result, want: dict[str, int]) -> None:
    groups_of_split = {}
    for crit in CRITERIA:
        per_split = result.frames[crit.value]
        for name, rows in per_split.items():
            # the requested size exactly, 1:1 by this criterion's own label
            assert len(rows) == want[name], (crit, name)
            assert (rows["label"] == Label.IN.value).sum() == (rows["label"] == Label.OUT.value).sum() == want[name] // 2
            assert rows["id"].is_unique
            groups_of_split.setdefault(name, set()).update(rows["group"])
        assert result.manifest["criteria"][crit.value]["splits"]["train"]["rows"] == want["train"]
    # group-aware across all criteria: no scene in two splits
    names = list(groups_of_split)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not groups_of_split[a] & groups_of_split[b], (a, b)
    # the pools themselves keep the proportions (to within a group) and hold every sample
    sizes = {k: len(v) for k, v in split.frames.items()}
    total = sum(sizes.values())
    shares = np.array([want[s] for s in ("train", "val", "test")], dtype=float)
    assert np.allclose([sizes[s] / total for s in ("train", "val", "test")], shares / shares.sum(), atol=0.01)


def test_paper_yaml_builds_per_criterion_balanced_sets_in_the_papers_proportions():
    """The paper's 20,000 / 2,000 / 2,000 scaled by 10 (`--set datasets.counts...`), from pools of every
    consensus sample: each criterion's splits exactly 2,000 / 200 / 200, each 1:1 by its own label."""
    pool = consensus_pool(4000)
    split, result = paper_sets(pool, "datasets.counts.train=2000", "datasets.counts.val=200", "datasets.counts.test=200")
    assert split.manifest["balance"] == "none" and sum(len(f) for f in split.frames.values()) == len(pool)
    _check_sets(split, result, {"train": 2000, "val": 200, "test": 200})
    assert all(not info.get("shortfall") for info in result.manifest["criteria"].values())
    # the draw order is one order for every criterion: the test sets share samples for the fused score
    tests = [set(result.frames[c.value]["test"]["id"]) for c in CRITERIA]
    assert len(tests[0] & tests[1] & tests[2]) > 20


def test_the_authors_16k_2k_2k_is_one_set_away():
    pool = consensus_pool(4000, seed=1)
    split, result = paper_sets(pool, "datasets.counts.train=1600", "datasets.counts.val=200", "datasets.counts.test=200",
                               "split.fractions.train=8")
    _check_sets(split, result, {"train": 1600, "val": 200, "test": 200})


def test_too_few_rows_of_a_label_shrink_all_three_splits_and_say_so():
    pool = consensus_pool(1200, seed=2)
    _, result = paper_sets(pool, "datasets.counts.train=2000", "datasets.counts.val=200", "datasets.counts.test=200")
    for crit in CRITERIA:
        info = result.manifest["criteria"][crit.value]
        rows = {s: b["rows"] for s, b in info["splits"].items()}
        assert info["shortfall"] and "same proportions" in info["shortfall"]
        assert rows["train"] < 2000 and rows["train"] == pytest.approx(10 * rows["val"], abs=20)
        assert all(b["In-context"] == b["Out-of-context"] for b in info["splits"].values())
    with pytest.raises(ValueError, match="too few rows of one label"):
        paper_sets(pool, "datasets.counts.train=2000", "datasets.allow_fewer=false")


def test_counts_and_rebalance_are_one_way_each():
    with pytest.raises(Exception, match="rebalance"):
        resolve("datasets", PAPER, {"rebalance": ["train"]})
    with pytest.raises(Exception, match="fractions"):
        resolve("split", PAPER, {"counts": {"train": 2, "val": 2, "test": 2}})


# --- how the students are asked ---------------------------------------------------------------------

def test_paper_students_are_asked_in_the_authors_layout():
    chat = resolve("datasets", PAPER).student_chat()
    assert chat.answer_format is AnswerFormat.REASONING_FIRST
    assert chat.system is None and chat.image_position == "before_text"  # the template's system turn, image first
    msgs = chat.messages(chat.request(Criterion.SIZE, "zebra"), answer="x")
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert [p["type"] for p in msgs[0]["content"]] == ["image", "text"]
    # the demo keeps its own: the packaged decision-first prompts, system turn and image after the text
    demo = resolve("datasets", PAPER.parent / "demo.yaml").student_chat()
    assert demo == StudentChat.packaged() and demo.system and demo.image_position == "after_text"


def test_a_users_student_prompt_file_is_read_recorded_and_asked(tmp_path):
    """The authors' exact student prompts are the user's to supply (never shipped): a JSON file naming
    one text file per criterion. Rows, the manifest and each student's metadata carry it."""
    from scenefit.student.metadata import StudentMeta

    for crit in CRITERIA:
        (tmp_path / f"{crit.value}.txt").write_text(f"Own words about the {{object}} and its {crit.display}.\n  Second line.")
    spec = {"version": "mine", "system": "Ignored here.", "image_position": "after_text",
            "criteria": {c.value: {"file": f"{c.value}.txt"} for c in CRITERIA}}
    (tmp_path / "students.json").write_text(json.dumps(spec))
    cfg = resolve("datasets", PAPER, {"prompt_file": str(tmp_path / "students.json"), "image_position": "before_text"})
    chat = cfg.student_chat()
    assert chat.prompt_version.startswith("mine-") and chat.system is None and chat.image_position == "before_text"
    req = chat.request(Criterion.LOCATION, "horse")
    assert req.prompt == "Own words about the horse and its Location.\n  Second line." and req.system is None
    pool = consensus_pool(48)
    split = balanced_split(pool, resolve("split", PAPER))
    result = build_student_datasets(split.frames, cfg.model_copy(update={"counts": None}), split.manifest)
    rows = result.frames["size"]["train"]
    assert set(rows["prompt"]) == {"Own words about the cow and its Size.\n  Second line."}
    assert rows["system"].isna().all() and set(rows["prompt_version"]) == {chat.prompt_version}
    assert StudentChat.model_validate(result.manifest["student"]) == chat
    meta = StudentMeta.for_chat(chat, "size", base_model="b")
    assert meta.chat == chat.for_criterion(Criterion.SIZE) and meta.decision_prefix == "Final decision:"
    # the text changes, so does the version; a file hash covers the files it names
    (tmp_path / "size.txt").write_text("Other words about the {object}.")
    assert cfg.student_chat().prompt_version != chat.prompt_version


@pytest.mark.parametrize("spec, problem", [
    ({"criteria": {}}, "needs a 'criteria' object"),
    ({"criteria": {"location": "no placeholder"}}, "no {object} placeholder"),
    ({"criteria": {"location": "the {object}"}, "image_position": "middle"}, "image_position"),
    ({"criteria": {"location": {"file": "missing.txt"}}}, "file not found"),
    ({"criteria": {"location": "the {object}"}, "temperature": 1}, "unknown key"),
])
def test_a_bad_student_prompt_file_is_named(tmp_path, spec, problem):
    from scenefit.prompts import student_prompt_file

    (tmp_path / "s.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=problem):
        student_prompt_file(tmp_path / "s.json")


def test_a_criterion_without_a_prompt_is_named():
    chat = StudentChat.packaged().for_criterion(Criterion.SIZE)
    with pytest.raises(ValueError, match="no prompt for location"):
        chat.request(Criterion.LOCATION, "cow")


# --- the rest of the table --------------------------------------------------------------------------

def test_paper_yaml_states_the_authors_settings():
    annotate = resolve("annotate", PAPER)
    qwen, molmo, internvl = annotate.teachers
    assert qwen.temperature is None and qwen.max_tokens == 512  # do_sample with the checkpoint's generation config
    assert molmo.temperature == 0.0 and molmo.max_tokens == 512  # a fresh GenerationConfig: greedy
    assert internvl.temperature is None and internvl.max_tokens == 1024
    train = resolve("train", PAPER)
    assert (train.save_steps, train.eval_steps) == (250, 125)
    assert (train.max_seq_length, train.truncation, train.min_pixels) == (2048, True, None)
    assert not train.packing and not train.gradient_checkpointing
    assert resolve("evaluate", PAPER).shortcut_box_width == 3
    assert resolve("consensus", PAPER).rule == "unanimous_final"  # the paper's; the authors' is designated_criteria


def test_a_sampling_teacher_sends_no_temperature():
    from scenefit.teachers.openai_backend import chat_body

    qwen = resolve("annotate", PAPER).teachers[0]
    body = chat_body(qwen.model, "p", "data:,", qwen.decoding())
    assert "temperature" not in body and body["max_tokens"] == 512
    assert chat_body("m", "p", "data:,", {"temperature": 0.0, "max_tokens": 9})["temperature"] == 0.0


def test_predict_asks_each_student_as_it_was_trained(tiny_model_dir, tmp_path):
    """The Predictor reads the prompt, system turn, image position and answer format from each
    student's metadata — not from the packaged prompts — and the fast path appends the prefix itself."""
    from scenefit.models.loading import load_model, load_processor
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.student.metadata import StudentInfo, StudentMeta

    mine = StudentChat(prompt_version="mine-1", prompts={"size": "Is the {object} the right size?"}, system=None,
                       image_position="before_text", answer_format=AnswerFormat.DECISION_FIRST)
    info = StudentInfo(Criterion.SIZE, tmp_path, None, StudentMeta.for_chat(mine, "size"))
    processor = load_processor(tiny_model_dir)
    pred = Predictor(load_model(tiny_model_dir, "fp32", "cpu"), processor, None, PredictConfig(), "tiny",
                     {Criterion.SIZE: info})
    text = pred.prompt_text(Criterion.SIZE, "zebra")
    assert text == mine.prompt_text(processor, mine.request(Criterion.SIZE, "zebra"))
    assert "Is the zebra the right size?" in text and text.index("<|image_pad|>") < text.index("Is the zebra")
    assert pred.prompt_text(Criterion.SIZE, "zebra", decision=True) == text + "Decision:"
    # criteria without a student (the baseline) keep the packaged prompts
    assert pred.prompt_text(Criterion.LOCATION, "zebra") == StudentChat.packaged().prompt_text(
        processor, StudentChat.packaged().request(Criterion.LOCATION, "zebra"))


def test_the_authors_second_test_set_is_a_test_only_pool():
    """docs/paper-setup.md: COinCO's testing images become one 1:1 test set per criterion with the same
    stages, everything in the test pool."""
    pool = consensus_pool(600, seed=3)
    split, result = paper_sets(pool, "split.fractions.train=0", "split.fractions.val=0", "datasets.counts.train=0",
                               "datasets.counts.val=0", "datasets.counts.test=200")
    assert len(split.frames["test"]) == len(pool) and split.frames["train"].empty and split.frames["val"].empty
    for crit in CRITERIA:
        test = result.frames[crit.value]["test"]
        assert len(test) == 200 and (test["label"] == Label.OUT.value).sum() == 100
        assert result.frames[crit.value]["train"].empty


def test_the_shortcut_test_draws_its_boxes_at_the_configured_width():
    """evaluate.shortcut_box_width reaches the predictor for the unmodified images (the authors draw 3 px);
    unset, the predictor's own rule applies (no width passed)."""
    from scenefit.core.records import Sample
    from scenefit.evaluate.runner import collect_answers

    seen = []

    class Recorder:
        def predict(self, items, explain=False, criteria=None, **kwargs):
            seen.append(kwargs.get("box_width"))
            return [{"criteria": {}} for _ in items]

    originals = [Sample(id="o1", image="o1.png", object="cow", box=[1, 2, 30, 40])]
    collect_answers(Recorder(), originals, ["location"], explain=False, box_width=3)
    collect_answers(Recorder(), originals, ["location"], explain=False)
    assert seen == [3, None]


def test_a_teacher_without_temperature_samples_with_the_models_generation_config(tiny_model_dir):
    """The authors' Qwen teacher: generate(do_sample=True) and nothing else — temperature, top-k, top-p and
    repetition penalty come from the checkpoint's generation config; 0.0 is greedy with those switched off."""
    from scenefit.models.loading import generate_text, load_model, load_processor

    model, tok = load_model(tiny_model_dir, "fp32", "cpu"), load_processor(tiny_model_dir).tokenizer
    calls = []
    real = model.generate

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    model.generate = spy
    inputs = dict(tok(["Hello"], return_tensors="pt"))
    generate_text(model, tok, inputs, 2, temperature=None, seed=0)
    generate_text(model, tok, inputs, 2, temperature=0.0)
    sampled, greedy = calls
    assert sampled["do_sample"] is True and not {"temperature", "top_p", "top_k", "repetition_penalty"} & set(sampled)
    assert greedy["do_sample"] is False and greedy["repetition_penalty"] == 1.0
