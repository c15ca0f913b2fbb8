"""Training throughput with padding-free packing vs padded batches (`train.packing`).

    .venv/bin/python benchmarks/packing.py                    # 3 repeats x 12 steps, both cases
    .venv/bin/python benchmarks/packing.py --repeats 5 --steps 20 --cases demo
    .venv/bin/python benchmarks/packing.py --smoke            # smallest size, seconds

Same data, tiny model, LoRA and batch on both sides (`benchmarks/train_step.py`'s recipe); only
the collator differs. Two cases:

* ``demo``: the demo's shape — 112x112 images (16 image tokens), one short answer sentence, so
  every sample is about as long as the others and there is little padding to save;
* ``paper-lengths``: the sequence lengths a Qwen2.5-VL-3B base sees with the paper recipe's image
  budget (``train.min_pixels`` 256 and ``max_pixels`` 1280 visual tokens, COCO-like photo sizes)
  and answers of 5 to 40 words. The tiny model is used for speed; the lengths come from the image
  processor's rule (one token per 28x28 pixels), which the stand-in base shares.

Prints samples/s (median of interleaved repeats), the padding share of the padded batches and
the ratio packed/padded.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ratio, smoke_flag  # noqa: E402
from train_step import RECIPES, project_run  # noqa: E402

#: make bench: 2 interleaved repeats instead of 3 (the run's budget).
BENCH_ARGS = ["--repeats", "2"]

PAPER_PIXELS = {"min_pixels": 256 * 28 * 28, "max_pixels": 1280 * 28 * 28}
PHOTO_SIZES = [(640, 480), (480, 640), (640, 427), (427, 640), (500, 375), (640, 360), (612, 612), (640, 512)]


def paper_length_data(data: Path, seed: int = 0) -> None:
    """Turn student_datasets' rows into COCO-sized photos with answers of varied length, in place."""
    import pandas as pd
    from PIL import Image

    from scenefit.core.criteria import Criterion, Label
    from scenefit.student.answer import render_student_answer

    rng = random.Random(seed)
    for split in ("train", "val", "test"):
        path = data / "location" / f"{split}.parquet"
        frame = pd.read_parquet(path)
        for i, row in frame.iterrows():
            Image.open(row["image"]).resize(rng.choice(PHOTO_SIZES)).save(row["image"])
            sentence = " ".join(["the cow stands on grass"] * rng.randint(1, 8))
            frame.at[i, "target"] = render_student_answer(Criterion.LOCATION, Label.parse(row["label"]), sentence)
        frame.to_parquet(path)


def padding_share(data: Path, model: Path, batch: int, settings: dict) -> tuple[float, list[int]]:
    """Share of pad tokens in the padded batches (sequential batches of the train split)."""
    import pandas as pd

    from scenefit.models.loading import load_processor
    from scenefit.train.data import encode_example

    processor = load_processor(model, settings.get("min_pixels"), settings.get("max_pixels"))
    rows = pd.read_parquet(data / "location" / "train.parquet").to_dict("records")
    lengths = [len(encode_example(processor, r, 1 << 16)["input_ids"]) for r in rows]
    padded = sum(max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch))
    return 1 - sum(lengths) / padded, lengths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cases", nargs="*", default=["demo", "paper-lengths"])
    smoke_flag(ap)
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.steps, args.batch = 1, 2, 4
    import torch

    torch.set_num_threads(1)  # 2 shared cores: one thread per process
    from _students import student_datasets

    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model

    lora = RECIPES["tiny"][0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_model(root / "model", TinyModelConfig(seed=0))
        for case in args.cases:
            data = student_datasets(root / case, sizes=(("train", 4 * args.batch), ("val", 4), ("test", 4)))
            settings = {}
            if case == "paper-lengths":
                paper_length_data(data)
                settings = dict(PAPER_PIXELS)
            share, lengths = padding_share(data, model, args.batch, settings)
            print(f"{case}: tokens per sample {min(lengths)}..{max(lengths)} (median {statistics.median(lengths):.0f}), "
                  f"padding {100 * share:.1f} % of the padded batches", flush=True)
            padded, packed = [], []
            for i in range(args.repeats):  # interleaved, so machine load hits both sides alike
                padded.append(project_run(data, model, root / f"{case}-pad{i}", args.steps, args.batch, lora, **settings))
                packed.append(project_run(data, model, root / f"{case}-pack{i}", args.steps, args.batch, lora,
                                          packing=True, **settings))
                print(f"  repeat {i + 1}: padded {padded[-1]:.2f} samples/s, packed {packed[-1]:.2f} samples/s", flush=True)
            results.append((case, statistics.median(padded), statistics.median(packed), share))

    print(f"\n{'case':<15}{'padding':>9}{'padded/s':>10}{'packed/s':>10}{'packed/padded':>15}")
    for case, pad, pack, share in results:
        print(f"{case:<15}{100 * share:>8.1f}%{pad:>10.2f}{pack:>10.2f}{pack / pad:>14.2f}x")
    print(f"({args.repeats} repeats x {args.steps} steps, batch {args.batch}, fp32 CPU)")
    for case, pad, pack, share in results:
        ratio(f"{case}.packed_vs_padded", pack / pad,
              what=f"case {case} ({100 * share:.1f} % padding): packed rows {pack:.3g} vs padded batches {pad:.3g} "
                   f"samples/s (tiny model, batch {args.batch}, {args.repeats} interleaved repeats x {args.steps} steps)")


if __name__ == "__main__":
    main()
