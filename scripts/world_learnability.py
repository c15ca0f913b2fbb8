"""How fast can a tiny student learn one criterion of the synthetic world from its pixels?

    .venv/bin/python scripts/world_learnability.py /tmp/learn location --mode lora --steps 300
    .venv/bin/python scripts/world_learnability.py /tmp/learn size --mode full --steps 600 --set box_width=4

A probe of the world, not of the training stage: it draws a world with every violation rate at
0.5, labels each sample with its *truth*, trains the tiny Qwen2.5-VL of the packaged demo config on the
bare decision ("Decision: In-context|Out-of-context", no analysis sentence) with a plain AdamW
loop (--batch, default 16), and prints held-out decision accuracy (the fast scoring path) every few steps.
``--mode lora`` trains the demo's adapters (the packaged demo config train.lora: LoRA on the language
model's attention and MLP + lm_head),
``--mode full`` every weight, the vision tower included. SYNTHETIC: a test bed only.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="scratch folder (model, world)")
    ap.add_argument("criterion", help="location, size or co_occurrence")
    ap.add_argument("--mode", choices=("lora", "full"), default="lora")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--n", type=int, default=1400, help="world samples (160 are held out)")
    ap.add_argument("--batch", type=int, default=16, help="samples per step")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="world config field=value")
    args = ap.parse_args()

    import pyarrow.parquet as pq
    import torch
    import yaml

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.config import resolve
    from scenefit.core.criteria import CRITERIA, Criterion
    from scenefit.models.loading import load_model, load_processor
    from scenefit.prompts import student_prompt, student_system_prompt
    from scenefit.student.decision import accuracy, score_rows
    from scenefit.testbed.tiny_model import build_tiny_model
    from scenefit.testbed.world import WorldConfig, generate_world
    from scenefit.train.data import AnswerOnlyCollator, encode_example
    from scenefit.train.lora import apply_lora

    crit = Criterion.parse(args.criterion)
    over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    torch.manual_seed(0)
    model_dir = args.root / "model"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, resolve("tiny_model", "demo"))
    cfg = WorldConfig(**{"n": args.n, "seed": 0, "originals": False,
                         "violation_rates": {c.value: 0.5 for c in CRITERIA}, **over})
    world = args.root / ("world-" + "-".join(f"{k}{v}" for k, v in sorted(over.items())))
    generate_world(cfg, world, overwrite=True)

    rows = []
    for r in pq.read_table(world / "manifest.parquet").to_pylist():
        label = r[f"truth_{crit.value}"]
        rows.append({"id": r["id"], "image": str(world / r["image"]), "label": label,
                     "prompt": student_prompt(crit).render(r["object"]), "system": student_system_prompt(),
                     "target": f"Decision: {label}"})
    by_label: dict[str, list[dict]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    k = min(len(v) for v in by_label.values())
    rows = [r for v in by_label.values() for r in v[:k]]  # 1:1 labels
    random.Random(0).shuffle(rows)
    val, train = rows[:160], rows[160:]

    processor = load_processor(model_dir, None, None)
    model = load_model(model_dir, dtype="fp32", device="cpu")
    if args.mode == "lora":
        model = apply_lora(model, resolve("train", "demo").lora)  # the demo's adapters
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    encoded = [encode_example(processor, r, 4096) for r in train]
    collate = AnswerOnlyCollator(processor.tokenizer.pad_token_id)
    rng, started, history = random.Random(0), time.time(), []
    model.train()
    for step in range(1, args.steps + 1):
        loss = model(**collate(rng.sample(encoded, args.batch))).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % max(1, args.steps // 6) == 0 or step == args.steps:
            acc = accuracy(score_rows(model, processor, val, batch_size=32), val)
            history.append({"step": step, "loss": round(loss.item(), 4), "val_accuracy": round(acc, 3),
                            "seconds": round(time.time() - started, 1)})
            print(json.dumps(history[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"criterion": crit.value, "mode": args.mode, "lr": args.lr, "world": over,
                      "train_rows": len(train), "val_rows": len(val), "history": history,
                      "notice": SYNTHETIC_NOTICE}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
