"""Benchmark: student inference, the reference path vs the project's batched paths.

    .venv/bin/python benchmarks/student_inference.py
    .venv/bin/python benchmarks/student_inference.py --images 32 --repeats 5 --students runs/demo/students

Same students, same images, same process. Three paths, images/s (median of repeats; a warm-up
call of each path is excluded):

- reference: three separately loaded students (three copies of the base, each with its
  adapter); per image, per criterion, one HF ``generate`` call at batch 1, greedy, up to 512
  new tokens (EOS stops it; the mean number of tokens generated is reported);
- explain: the Predictor (one base + three adapters) generating the explanations, batched
  with left padding, bounded by ``max_new_tokens``;
- fast: the Predictor's decision path — one forward pass per batch and criterion, no
  generation.

Goals (issue 8): fast >= 10x the reference, explanations >= 3x. Students: the demo's
($DEMO_DIR/students) when trained, else toy students built here (see benchmarks/_students.py).
Torch runs one thread per process by default: the machine's 2 cores are shared, and two
spinning threads against other processes measured ~6x slower than one (--threads to change).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timed  # noqa: E402


def reference_models(predictor):
    """Three (base + adapter) models loaded separately, as a per-criterion script would."""
    from peft import PeftModel

    from scenefit.models.loading import load_model, load_processor

    models = {}
    for crit, info in predictor.students.items():
        base = load_model(predictor.base, dtype=predictor.config.dtype, device=str(predictor.device))
        models[crit] = (PeftModel.from_pretrained(base, str(info.path)).eval(), load_processor(str(info.path)))
    return models


def run_reference(models, items, box_width: int, max_new_tokens: int = 512) -> tuple[list, list[int]]:
    """Batch 1, one criterion at a time; returns parsed labels and new-token counts."""
    import torch

    from scenefit.student.answer import parse_student_answer
    from scenefit.predict import prepare_image, to_item
    from scenefit.student.chat import StudentChat

    labels, counts = [], []
    with torch.inference_mode():
        for i, raw in enumerate(items):
            item = to_item(raw, i)
            image = prepare_image(item, box_width)
            for crit, (model, processor) in models.items():
                chat = StudentChat.packaged()
                text = chat.prompt_text(processor, chat.request(crit, item.object))
                inputs = processor(text=[text], images=[image], return_tensors="pt").to(model.device)
                out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=processor.tokenizer.pad_token_id)
                new = out[0, inputs["input_ids"].shape[1]:]
                counts.append(int(new.numel()))
                answer = processor.tokenizer.decode(new, skip_special_tokens=True)
                labels.append(parse_student_answer(answer, crit).label)
    return labels, counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=Path, default=None, help="student folder (default: demo's, else toy)")
    ap.add_argument("--images", type=int, default=16, help="images per measurement")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per path (median)")
    ap.add_argument("--reference-repeats", type=int, default=1, help="timed repeats of the slow reference path")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (same for every path)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from _students import bench_items, demo_students, toy_students

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.predict import PredictConfig, Predictor

    t0 = time.perf_counter()
    students = args.students or demo_students()
    origin = str(students) if students else "toy students (trained here, ~30 s)"
    if students is None:
        students = toy_students()
    items, item_origin = bench_items(args.images, students)
    cfg = PredictConfig(device=args.device, batch_size=args.batch_size)
    predictor = Predictor.from_students(students, config=cfg)
    models = reference_models(predictor)
    print(f"students: {origin}; images: {len(items)} from {item_origin}; torch threads {torch.get_num_threads()}; "
          f"setup {time.perf_counter() - t0:.1f} s", flush=True)

    # warm-up (excluded): one image through every path
    run_reference(models, items[:1], cfg.box_width)
    predictor.predict(items[:2], explain=True)
    predictor.predict(items[:2])

    t_ref, (ref_labels, ref_counts) = timed(lambda: run_reference(models, items, cfg.box_width), args.reference_repeats)
    t_exp, exp_preds = timed(lambda: predictor.predict(items, explain=True), args.repeats)
    exp_tokens = list(predictor.generated_tokens)
    t_fast, fast_preds = timed(lambda: predictor.predict(items), args.repeats)

    n = len(items)
    fast_labels = [p.criteria[c].label for p in fast_preds for c in predictor.criteria]
    agree = sum(a is b for a, b in zip(fast_labels, ref_labels))
    rows = [
        ("reference (3 models, generate, batch 1)", n / t_ref, statistics.mean(ref_counts)),
        (f"explain (1 base + 3 adapters, batch {args.batch_size})", n / t_exp, statistics.mean(exp_tokens)),
        ("fast decision (all 3 criteria)", n / t_fast, 0.0),
    ]
    ref_rate = rows[0][1]
    print(f"\n{'path':48s} {'images/s':>10s} {'x ref':>8s} {'new tokens':>11s}")
    for name, rate, tokens in rows:
        print(f"{name:48s} {rate:10.2f} {rate / ref_rate:8.1f} {tokens:11.1f}")
    fast_x, exp_x = rows[2][1] / ref_rate, rows[1][1] / ref_rate
    print(f"\nfast path vs reference: {fast_x:.1f}x (goal >= 10x: {'met' if fast_x >= 10 else 'NOT met'})")
    print(f"explanations vs reference: {exp_x:.1f}x (goal >= 3x: {'met' if exp_x >= 3 else 'NOT met'})")
    print(f"fast decision = reference's generated label on {agree}/{len(ref_labels)} answers")
    print(f"reference answers hitting the 512-token cap: {sum(c >= 512 for c in ref_counts)}/{len(ref_counts)}")
    if any(s.meta.get("toy") for s in predictor.students.values()) or "demo" in item_origin:
        print(SYNTHETIC_NOTICE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
