"""Shared setup of the benchmarks: the models and students to measure, the images and the rows.

- ``demo_students()``: the students `make demo` trained ($DEMO_DIR/students), when present;
- ``toy_students()``: a tiny base and three toy students (scenefit.testbed.toy_students);
- ``standin_students(size)``: the offline stand-in of Qwen2.5-VL-3B-Instruct (its real vocabulary,
  chat template, processor and config; random weights) shrunk to ``size``, with three random LoRA
  students — the CPU benchmarks' "stand-in scale" (``STANDIN_CPU``) and smoke size (``STANDIN_SMOKE``);
- ``scenes(n, side)``: boxed synthetic scenes as Predictor items; ``student_datasets(...)``: rows
  in the student dataset format `scenefit datasets` writes (for the training benchmarks).

Built models go to ``$SCENEFIT_BENCH_CACHE`` when set (run_all.py sets one per run, so three
scripts share one stand-in build), else to a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from scenefit.core.criteria import CRITERIA

#: The stand-in scale of the CPU benchmarks: Qwen2.5-VL-3B's vocabulary (151,936 rows, tied
#: embeddings), template, processor and head geometry (head dim 128 with 2 KV heads in the text
#: model, 80 in the tower, full attention in every eighth tower block, 112-px windows), at 4 of 36
#: layers and width 768 of 2048 (MLP 4096, ~5.3x as in the 3B), tower 8 of 32 blocks at width 320
#: of 1280. ~174 M parameters (117 M of them the embedding table), ~13 M in the tower.
STANDIN_CPU = dict(layers=4, hidden=768, intermediate=4096, heads=6, kv_heads=2, vision_depth=8, vision_hidden=320,
                   vision_intermediate=864, vision_heads=4)
#: The test suite's stand-in size (2 layers, width 64): for smoke runs only.
STANDIN_SMOKE = dict(layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, vision_depth=2, vision_hidden=32,
                     vision_intermediate=64, vision_heads=2)


def describe(size: dict) -> str:
    return (f"{size['layers']} layers x {size['hidden']} (MLP {size['intermediate']}, {size['heads']} heads / "
            f"{size['kv_heads']} KV), tower {size['vision_depth']} blocks x {size['vision_hidden']}")


def _workdir(key: Optional[str] = None) -> Path:
    cache = os.environ.get("SCENEFIT_BENCH_CACHE")
    if cache and key:
        folder = Path(cache) / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.mkdtemp(prefix="scenefit-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def demo_students() -> Optional[Path]:
    """The students `make demo` trained, when all three are there."""
    from scenefit.cli.common import demo_students as demo_dir

    d = demo_dir()
    ok = all((d / c.value / "adapter_config.json").is_file() for c in CRITERIA)
    return d if ok else None


def toy_students(steps: int = 45, tiny_cfg=None, rank: int = 16, modules_to_save=("lm_head",)) -> Path:
    """Build a tiny base and three toy students (joint-trained when steps > 0) in a temp folder."""
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
    from scenefit.testbed.toy_students import build_toy_students

    root = _workdir()
    base = build_tiny_model(root / "base", tiny_cfg or TinyModelConfig(seed=0))
    return build_toy_students(base, root / "students", steps=steps, batch_size=4, joint=True, rank=rank,
                              modules_to_save=modules_to_save)


def standin_base(size: dict, device: str = "cpu") -> Path:
    """The stand-in folder at ``size`` ({} = the full 3B; random weights drawn on ``device``, seed 0),
    built once per cache."""
    from scenefit.testbed.standin import StandinSize, build_standin_model

    root = _workdir("standin-" + _key(size))
    if not (root / "base" / "config.json").is_file():
        tmp = root / "base.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        build_standin_model(tmp, StandinSize(**size), device=device)
        tmp.rename(root / "base")
    return root / "base"


def standin_students(size: dict, rank: int = 16, modules_to_save=None, device: str = "cpu", dtype: str = "fp32") -> Path:
    """Three random LoRA students (q/k/v/o, plus ``modules_to_save`` copies) on the stand-in at
    ``size``, made with the base loaded on ``device`` in ``dtype``."""
    from scenefit.testbed.toy_students import build_toy_students

    base = standin_base(size, device)
    root = _workdir("standin-students-" + _key(size, rank, modules_to_save))
    if not all((root / "students" / c.value / "scenefit_student.json").is_file() for c in CRITERIA):
        build_toy_students(base, root / "students", steps=0, rank=rank, modules_to_save=modules_to_save,
                           device=device, dtype=dtype)
    return root / "students"


def bench_items(n: int, students: Path, seed: int = 0) -> tuple[list, str]:
    """``n`` items and where they come from: the demo's test split when the students are the
    demo's, else toy scenes."""
    demo_test = students.parent / "datasets" / "location" / "test.parquet"
    if demo_test.is_file():
        from scenefit.core.parquet_io import read_table

        frame = read_table(demo_test)[0].head(n)  # image paths resolved against the file's folder
        if len(frame) == n:
            items = [(row.image, row.object, None, True) for row in frame.itertuples()]
            return items, f"demo test split ({demo_test})"
    from scenefit.testbed.toy_students import toy_items

    items, _ = toy_items(n, seed=seed)
    return items, "toy scenes (scenefit.testbed.toy_students)"


def _scene(side: int, floating: bool, seed: int):
    """A sky-and-grass picture with a white object boxed in red, floating or standing (SYNTHETIC)."""
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", (side, side), (120, 190 + rng.randint(-20, 20), 250))
    d = ImageDraw.Draw(im)
    d.rectangle((0, side * 3 // 5, side, side), fill=(70, 150 + rng.randint(-20, 20), 60))
    w, h = rng.randint(side // 8, side // 4), rng.randint(side // 8, side // 5)
    x0 = rng.randint(2, side - w - 2)
    y1 = rng.randint(h + 4, side * 2 // 5) if floating else rng.randint(side * 7 // 10, side - 2)
    box = (x0, y1 - h, x0 + w, y1)
    d.rectangle((x0 + 2, y1 - h + 2, x0 + w - 2, y1 - 2), fill=(245, 245, 245))
    return im, box


def scenes(n: int, side: int = 448) -> list[dict]:
    """``n`` synthetic scenes as Predictor items (the box drawn by the Predictor)."""
    out = []
    for i in range(n):
        im, box = _scene(side, i % 2 == 1, i)
        out.append({"id": f"s{i}", "image": im, "object": "cow", "box": list(box)})
    return out


def student_datasets(root: Path, sizes=(("train", 32), ("val", 8), ("test", 8)), side: int = 112,
                     criterion: str = "location", distinct: Optional[int] = None) -> Path:
    """ROOT/datasets/<criterion>/{split}.parquet in the format `scenefit datasets` writes: boxed
    scenes, a cow floating (Out-of-context) or standing (In-context), the students' prompt and
    answer. ``distinct``: at most this many image files per split, rows reusing them in turn (for
    speed runs of hundreds of large images). Returns ROOT/datasets."""
    import pandas as pd

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.criteria import Criterion, Label
    from scenefit.core.images import draw_box
    from scenefit.prompts import student_prompt, student_prompt_version, student_system_prompt
    from scenefit.student.answer import render_student_answer

    crit = Criterion(criterion)
    images, data = root / "images", root / "datasets"
    images.mkdir(parents=True, exist_ok=True)
    (data / crit.value).mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in sizes:
        rows = []
        for i in range(n):
            label = Label.OUT if i % 2 else Label.IN
            path = images / f"{split}-{i % distinct if distinct else i}.png"
            if not path.is_file():
                im, box = _scene(side, label is Label.OUT, k)
                draw_box(im, box).save(path)
            sentence = "The cow hangs in the sky." if label is Label.OUT else "The cow stands on the grass."
            rows.append({
                "id": f"{split}-{i}", "group": f"g{k}", "image": str(path), "object": "cow", "box": None,
                "criterion": crit.value, "label": label.value, "analysis": sentence,
                "prompt": student_prompt(crit).render("cow"), "system": student_system_prompt(),
                "target": render_student_answer(crit, label, sentence), "prompt_version": student_prompt_version(),
                "truth": label.value, "final": label.value, "scene": "farm", "synthetic": True,
            })
            k += 1
        pd.DataFrame(rows).to_parquet(data / crit.value / f"{split}.parquet")
    (data / "manifest.json").write_text(json.dumps({"stage": "datasets", "synthetic": True, "notice": SYNTHETIC_NOTICE}))
    return data


def small_run(n: int = 240, config: Optional[Path] = None) -> Path:
    """RUN/{model, world, annotate, consensus, split, datasets}: `make demo`'s first seven stages
    with the packaged demo config, at ``n`` samples and the tiny base without its pretraining, built once
    per cache (the scripts that use it write beside these folders, never into them). Seconds; SYNTHETIC."""
    from scenefit.cli import app

    c = str(config or "demo")  # the packaged demo config, by name
    r = _workdir("small-run-" + _key(n, c)) / "run"
    if (r / "datasets" / "manifest.json").is_file():
        return r
    stages = [
        ["tiny-model", r / "model", "--config", c, "--set", "vision_pretrain_steps=0", "--set", "knowledge_pretrain_steps=0"],
        ["synth", "--config", c, "--out", r / "world", "--n", n, "--set", "originals=false"],
        ["annotate", r / "world" / "manifest.parquet", "--db", r / "annotate" / "annotations.sqlite", "--config", c],
        ["consensus", "--db", r / "annotate" / "annotations.sqlite", "--manifest", r / "world" / "manifest.parquet",
         "--out", r / "consensus", "--config", c],
        ["split", r / "consensus" / "consensus.parquet", "--out", r / "split", "--config", c],
        ["datasets", r / "split", "--out", r / "datasets", "--config", c],
    ]
    for argv in stages:
        app([str(a) for a in argv], standalone_mode=False)
    return r
