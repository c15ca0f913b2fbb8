"""Benchmark (GPU): student inference on a full-size random-weight Qwen2.5-VL-3B, one base +
three LoRA students, in bf16 — issue 8, item 6. One prepared script for a device session.

    python benchmarks/gpu_figures.py --out "$OUT/gpu_figures.json"                  # on the H200
    .venv/bin/python benchmarks/gpu_figures.py --preset small --device cpu --dtype fp32 \\
        --batch-sizes 1 2 --new-tokens 4 --reference-images 1 --repeats 1              # CPU smoke run

No download: the model is built in memory from Qwen2.5-VL-3B's public dimensions (36 layers,
hidden 2048, MLP 11008, 16 heads / 2 KV heads, vocab 151,936, 32-block vision tower of width
1280) with random weights; the tokenizer and image processor are the tiny model's (its ids all
fall inside the vocabulary). Images are synthetic 448×448 scenes with a red box (256 image tokens
each). Three paths, images/s at each batch size:

- reference: three separately built (base + adapter) models, HF ``generate`` at batch 1, one
  criterion at a time;
- explain: the Predictor (one base + three adapters) generating at the batch size;
- fast: the Predictor's decision path (one forward pass per batch and criterion).

A random model does not stop on its own, so both generating paths produce exactly
``--new-tokens`` tokens (EOS suppressed): the comparison is per token, not per answer length.
The tower's attention is ``--vision-attention`` (default "packed", what ``load_model`` installs;
"transformers" = one SDPA call per window), and a last section compares the two at the largest
batch (issue 20): tower seconds, fast-path images/s, the tower's share of the fast path, SDPA
calls per tower forward, prefill share of peak, and the tower outputs' largest difference.
``--vision-attention-only`` measures just that (fast path at the largest batch, no explanations,
no reference models: about 2 minutes of device time).

Also: prefill TFLOP/s of the fast path at the largest batch (2 × decoder parameters × tokens
plus 2 × vision parameters × patches; attention scores not counted — an underestimate) against ``--peak-tflops`` (H200
bf16 dense: ~790), and peak GPU memory of one base + three adapters while serving. Prints a
table and writes JSON (``--out``). The device has torch, transformers and peft; the project
itself must be importable (``pip install --no-deps -e .`` or ``PYTHONPATH=src``). Expected
device time with the defaults: about 3–4 minutes (four 3B models built, 64-token answers).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Qwen2.5-VL-3B's published dimensions, and a small stand-in for CPU smoke runs.
PRESETS = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, mrope_section=[16, 24, 24],
               vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                           fullatt_block_indexes=[7, 15, 23, 31])),
    "small": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=4096, mrope_section=[8, 12, 12],
                  vision=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, fullatt_block_indexes=[1])),
}
CRITERIA = ("location", "size", "co_occurrence")


def build_model(preset: dict, tokenizer, device: str, dtype):
    """A random-weight Qwen2.5-VL of ``preset``'s dimensions, built directly on ``device``."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from scenefit.testbed.tiny_model import qwen_vl_config, set_generation_defaults

    text = {k: v for k, v in preset.items() if k not in ("vision", "mrope_section", "vocab_size")}
    config = qwen_vl_config(tokenizer, dict(text, max_position_embeddings=128000), preset["vision"], rope_theta=1e6,
                            mrope_section=preset["mrope_section"], vocab_size=preset["vocab_size"],
                            tie_word_embeddings=True)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    set_generation_defaults(model, tokenizer)
    return model.eval()


def add_students(model, rank: int, names=CRITERIA):
    """PEFT multi-adapter model: one random LoRA adapter per name on the LM's q/k/v/o."""
    from peft import get_peft_model

    from scenefit.train.config import LoraSettings
    from scenefit.train.lora import lora_config

    cfg = lora_config(LoraSettings(r=rank, alpha=2 * rank, dropout=0.0, modules_to_save=[],
                                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    cfg.init_lora_weights = False  # random B too: every adapter changes the outputs
    peft_model = get_peft_model(model, cfg, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, cfg)
    return peft_model.eval()


def scenes(n: int, size: int = 448):
    """``n`` synthetic boxed scenes as Predictor items (SYNTHETIC)."""
    import random

    from PIL import Image, ImageDraw

    rng, items = random.Random(0), []
    for i in range(n):
        img = Image.new("RGB", (size, size), (120, 190, 250))
        d = ImageDraw.Draw(img)
        d.rectangle([0, size // 2, size, size], fill=(70, 150, 60))
        x, y = rng.randint(20, size - 120), rng.randint(20, size - 120)
        d.rectangle([x + 10, y + 10, x + 80, y + 70], fill=(240, 240, 240))
        items.append({"id": f"g{i}", "image": img, "object": "cow", "box": [x, y, x + 90, y + 80]})
    return items


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_on(device: str, fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call, waiting for the
    device's queued work inside each timing (_timing.timed does the median)."""
    from _timing import timed

    def call() -> None:
        fn()
        sync(device)

    call()
    return timed(call, repeats)[0]


def fast_path_breakdown(predictor, items: list, args) -> dict[str, float]:
    """Where one batch's fast-path time goes (median seconds): the box drawing, the processor
    (images + text, done once per batch), tokenising alone (each later criterion), the vision
    tower, and one criterion's decoder pass with the vision features given."""
    import torch

    from scenefit.core.criteria import Criterion
    from scenefit.formats import DECISION_PREFIX
    from scenefit.predict.items import prepare_image, to_item
    from scenefit.predict.predictor import BatchPixels

    cfg = predictor.config
    prepared = [to_item(it, i) for i, it in enumerate(items)]
    draw = lambda: [prepare_image(it, cfg.box_width, cfg.box_color, cfg.max_image_pixels) for it in prepared]
    images = draw()
    texts = [predictor.prompt_text(Criterion.LOCATION, it.object) + DECISION_PREFIX for it in prepared]
    pixels = BatchPixels()
    inputs = predictor._encode(texts, images, pixels)
    model = predictor.model
    vision = {}

    def tower() -> None:
        vision["image"] = model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)

    def decoder() -> None:
        rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
        model(**rest, mm_encoder_outputs=vision, logits_to_keep=1, use_cache=False)

    with torch.inference_mode(), predictor.use(Criterion.LOCATION):
        return {
            "draw_boxes": timed_on(args.device, draw, args.repeats),
            "processor": timed_on(args.device, lambda: predictor._encode(texts, images), args.repeats),
            "tokenise_only": timed_on(args.device, lambda: predictor._encode(texts, images, pixels), args.repeats),
            "vision_tower": timed_on(args.device, tower, args.repeats),
            "decoder_one_criterion": timed_on(args.device, decoder, args.repeats),
        }


def vision_attention_figures(predictor, items: list, args, flops_per_image: float) -> dict:
    """Issue 20, item 2: the tower's attention per window (transformers) vs packed
    (scenefit.models.vision_attention) on the same batch; the mode set by --vision-attention is restored."""
    import torch

    from scenefit.models.vision_attention import counting_sdpa_calls, set_vision_attention, vision_towers

    model = predictor.model
    tower = vision_towers(model)[0]
    pix = predictor.processor.image_processor(images=[it["image"] for it in items], return_tensors="pt")
    pixels = pix["pixel_values"].to(args.device, tower.dtype)
    grid = pix["image_grid_thw"].to(args.device)
    figures: dict = {"images": len(items), "patches": int(grid.prod(-1).sum())}
    outputs = {}
    with torch.inference_mode():
        for mode in ("transformers", "packed"):
            set_vision_attention(model, mode)
            forward = lambda: tower(pixels, grid_thw=grid).pooler_output  # noqa: E731
            with counting_sdpa_calls() as calls:
                outputs[mode] = forward().float()
            t_tower = timed_on(args.device, forward, args.repeats)
            t_fast = timed_on(args.device, lambda: predictor.predict(items), args.repeats)
            figures[mode] = {"sdpa_calls_per_tower_forward": len(calls), "tower_seconds": t_tower,
                             "fast_images_per_s": len(items) / t_fast, "fast_seconds": t_fast,
                             "tower_share_of_fast_path": t_tower / t_fast,
                             "prefill_fraction_of_peak": flops_per_image * len(items) / t_fast / 1e12 / args.peak_tflops}
    set_vision_attention(model, args.vision_attention)
    before, after = figures["transformers"], figures["packed"]
    figures["tower_speedup"] = before["tower_seconds"] / after["tower_seconds"]
    figures["fast_path_speedup"] = after["fast_images_per_s"] / before["fast_images_per_s"]
    figures["max_abs_difference"] = (outputs["packed"] - outputs["transformers"]).abs().max().item()
    figures["max_abs_output"] = outputs["transformers"].abs().max().item()
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="3b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--batches", type=int, default=2, help="batches per measurement (images = batch size x this)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--new-tokens", type=int, default=64, help="generated tokens per answer (EOS suppressed)")
    ap.add_argument("--reference-images", type=int, default=4, help="images through the slow reference path")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of the random students")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="the device's dense bf16 peak")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    ap.add_argument("--vision-attention", choices=("packed", "transformers"), default="packed",
                    help="the tower's attention for every path (scenefit.models.vision_attention)")
    ap.add_argument("--vision-attention-only", action="store_true",
                    help="only the fast path at the largest batch and the per-window vs packed comparison")
    args = ap.parse_args()

    import torch
    import transformers

    from scenefit import SYNTHETIC_NOTICE
    from scenefit.core.criteria import Criterion
    from scenefit.predict import PredictConfig, Predictor
    from scenefit.models.loading import load_processor
    from scenefit.testbed.tiny_model import TinyModelConfig, build_tiny_model
    from scenefit.models.vision_attention import set_vision_attention
    from student_inference import run_reference

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    preset = PRESETS[args.preset]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:  # the tiny folder lends its tokenizer and processor
        processor = load_processor(build_tiny_model(Path(tmp) / "tiny", TinyModelConfig(max_pixels=448 * 448)))
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = add_students(build_model(preset, processor.tokenizer, args.device, dtype), args.rank)
    set_vision_attention(model, args.vision_attention)
    if args.vision_attention_only:
        args.batch_sizes = [max(args.batch_sizes)]
    loaded_bytes = torch.cuda.memory_allocated() if cuda else None
    params = sum(p.numel() for p in model.get_base_model().parameters())
    vision_params = sum(p.numel() for p in model.get_base_model().model.visual.parameters())
    cfg = PredictConfig(device=args.device, dtype=args.dtype, batch_size=max(args.batch_sizes),
                        max_new_tokens=args.new_tokens)
    predictor = Predictor(model, processor, {Criterion(c): c for c in CRITERIA}, cfg, base=f"random Qwen2.5-VL ({args.preset})")
    # Fixed-length answers: a random model never emits EOS on purpose, and may by chance.
    predictor.model.generation_config.min_new_tokens = args.new_tokens
    items = scenes(max(args.batch_sizes) * args.batches)
    print(f"model: random Qwen2.5-VL, preset {args.preset}, {params / 1e9:.2f} B parameters "
          f"({vision_params / 1e6:.0f} M vision), {args.dtype} on {args.device}; three rank-{args.rank} adapters; "
          f"setup {time.perf_counter() - started:.0f} s", flush=True)

    rows: dict[str, dict] = {}
    # Written after every stage, so a failure late in a device session keeps what was measured.
    result = {
        "preset": args.preset, "device": args.device,
        "device_name": torch.cuda.get_device_name() if cuda else "cpu", "dtype": args.dtype,
        "parameters": params, "vision_parameters": vision_params, "rank": args.rank, "new_tokens": args.new_tokens,
        "paths": rows, "gpu_memory_loaded_bytes": loaded_bytes, "torch": torch.__version__,
        "transformers": transformers.__version__, "vision_attention": args.vision_attention, "command": " ".join(sys.argv), "notice": SYNTHETIC_NOTICE,
    }

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2))

    save()
    for b in args.batch_sizes:
        predictor.config = cfg.model_copy(update={"batch_size": b})
        batch_items = items[: b * args.batches]
        t_fast = timed_on(args.device, lambda: predictor.predict(batch_items), args.repeats)
        rows[f"fast@{b}"] = {"images_per_s": len(batch_items) / t_fast, "seconds": t_fast, "images": len(batch_items)}
        print(f"batch {b:>3}: fast {rows[f'fast@{b}']['images_per_s']:8.2f} images/s", flush=True)
        if not args.vision_attention_only:
            t_exp = timed_on(args.device, lambda: predictor.predict(batch_items, explain=True), max(1, args.repeats // 2))
            rows[f"explain@{b}"] = {"images_per_s": len(batch_items) / t_exp, "seconds": t_exp,
                                    "images": len(batch_items), "new_tokens": statistics.mean(predictor.generated_tokens)}
            print(f"batch {b:>3}: explain {rows[f'explain@{b}']['images_per_s']:8.2f} images/s", flush=True)
        save()
    peak_bytes = torch.cuda.max_memory_allocated() if cuda else None

    # Prefill throughput of the fast path at the largest batch: three criteria per image.
    b = max(args.batch_sizes)
    enc = processor(text=[predictor.prompt_text(Criterion.LOCATION, "cow")], images=[items[0]["image"]],
                    return_tensors="pt")
    tokens_per_image = int(enc["input_ids"].shape[1])
    patches = int(enc["image_grid_thw"].prod())
    fast = rows[f"fast@{b}"]
    # decoder matmuls per token: every text parameter but the embedding table (a lookup; the
    # tied lm_head runs for the last position only)
    embed = model.get_base_model().get_input_embeddings().weight.numel()
    flops = 3 * fast["images"] * (2 * (params - vision_params - embed) * tokens_per_image)
    flops += fast["images"] * 2 * vision_params * patches  # the vision tower runs once per image (shared)
    tflops = flops / fast["seconds"] / 1e12
    result.update(tokens_per_prompt=tokens_per_image, prefill_tflops=tflops, peak_tflops=args.peak_tflops,
                  prefill_fraction_of_peak=tflops / args.peak_tflops, gpu_memory_peak_bytes=peak_bytes,
                  fast_path_breakdown=fast_path_breakdown(predictor, items[:b], args))
    print("fast path at batch %d, seconds per stage: %s" % (b, ", ".join(
        f"{k} {v:.3f}" for k, v in result["fast_path_breakdown"].items())), flush=True)
    save()
    va = result["vision_attention"] = vision_attention_figures(predictor, items[:b], args, flops / fast["images"])
    for mode in ("transformers", "packed"):
        f = va[mode]
        print(f"tower attention {mode:12s}: {f['sdpa_calls_per_tower_forward']:6d} SDPA calls, tower "
              f"{f['tower_seconds']:.3f} s = {f['tower_share_of_fast_path']:.0%} of the fast path, fast path "
              f"{f['fast_images_per_s']:.2f} images/s, prefill {f['prefill_fraction_of_peak']:.1%} of peak", flush=True)
    print(f"packed vs per window: tower {va['tower_speedup']:.2f}x, fast path {va['fast_path_speedup']:.2f}x, "
          f"largest output difference {va['max_abs_difference']:.2e} (outputs up to {va['max_abs_output']:.2f})", flush=True)
    save()
    if args.vision_attention_only:
        print(SYNTHETIC_NOTICE)
        return 0
    print("prefill measured; building the three reference models", flush=True)

    # Reference: three separately built students, batch 1, one criterion at a time.
    ref_items = items[: args.reference_images]
    references = {}
    for c in CRITERIA:
        m = add_students(build_model(preset, processor.tokenizer, args.device, dtype), args.rank, names=(c,))
        set_vision_attention(m, args.vision_attention)
        m.get_base_model().generation_config.min_new_tokens = args.new_tokens
        references[c] = (m, processor)
    last: dict = {}

    def reference() -> None:
        last["labels"], last["counts"] = run_reference(references, ref_items, cfg.box_width,
                                                       max_new_tokens=args.new_tokens)

    t_ref = timed_on(args.device, reference, 1)
    rows["reference@1"] = {"images_per_s": len(ref_items) / t_ref, "seconds": t_ref, "images": len(ref_items),
                           "new_tokens": statistics.mean(last["counts"])}
    ref_rate = rows["reference@1"]["images_per_s"]

    print(f"\n{'path':16s} {'images/s':>10s} {'x reference':>12s} {'new tokens':>11s}")
    for name, r in rows.items():
        print(f"{name:16s} {r['images_per_s']:10.2f} {r['images_per_s'] / ref_rate:12.1f} {r.get('new_tokens', 0):11.1f}")
    print(f"\nprefill (fast path, batch {b}, {tokens_per_image} tokens per prompt): {tflops:.1f} TFLOP/s "
          f"= {tflops / args.peak_tflops:.1%} of {args.peak_tflops:g} (matmul parameters x 2 x tokens; attention scores not counted)")
    if cuda:
        print(f"GPU memory, one base + three adapters: {loaded_bytes / 2**30:.2f} GiB loaded, "
              f"{peak_bytes / 2**30:.2f} GiB peak while serving (before the reference models were built)")
    print(SYNTHETIC_NOTICE)
    result["ratios_vs_reference"] = {k: r["images_per_s"] / ref_rate for k, r in rows.items()}
    save()
    if args.out:
        print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
