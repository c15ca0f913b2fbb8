"""What ``vllm serve`` needs to serve the three students as LoRA adapters on one base.

    scenefit export-vllm --students runs/demo/students --out runs/demo/vllm.json

vLLM's multi-LoRA serving (``vllm serve BASE --enable-lora --lora-modules name=path …
--max-lora-rank R --max-loras 3``) applies LoRA A/B matrices to the language model's linear
layers only. An adapter is refused (unless forced) when it:

- carries ``modules_to_save`` (e.g. a trained ``lm_head`` copy): vLLM only serves adapters
  whose ``modules_to_save`` is empty ("vLLM only supports modules_to_save being None");
- targets the vision tower (``visual.*``), or a module that is not one of the language model's
  attention/MLP projections vLLM packs for LoRA on Qwen2.5-VL (q/k/v → ``qkv_proj``, ``o_proj``,
  gate/up → ``gate_up_proj``, ``down_proj``);
- uses DoRA, a LoRA bias, or a rank above vLLM's largest ``--max-lora-rank``.

``--max-lora-rank`` only accepts the values in :data:`VLLM_MAX_LORA_RANKS` (vLLM's
``MaxLoRARanks``, vllm/config/lora.py, v0.14 and later), so the largest adapter rank is rounded
up to the next of them.

The printed command names the base as the students resolve it (an absolute folder or a hub id,
never a path relative to where the command ran) and bounds the engine to what one student
request needs: ``--limit-mm-per-prompt '{"image": 1, "video": 0}'`` (one image, no video; JSON,
the type vLLM's ``EngineArgs.add_cli_args`` gives the flag), ``--max-model-len`` (the students'
chat prompt + the image tokens of their processor's largest image + :data:`ANSWER_TOKENS`,
rounded up to 256) and, when the students' processor bounds the image size differently from the
base's, ``--mm-processor-kwargs`` with their ``min_pixels``/``max_pixels``. The flags were read in
vLLM's source: vllm/engine/arg_utils.py at commit 99d7eb5d6a512cfcc5a2b104f24ebf2d6cda772b
(``--max-model-len``, ``--limit-mm-per-prompt``, ``--mm-processor-kwargs``, ``--enable-lora``,
``--max-loras``, ``--max-lora-rank``), vllm/config/multimodal.py at 01230b40128e570a58e54e75f7e55c4d5cd9246d
(the ``{"image": N}`` count form) and vllm/entrypoints/openai/cli_args.py at
005223338608bc94fd165a4f976c102a57bd1fc4 (``--lora-modules name=path``).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scenefit.core.criteria import CRITERIA, Criterion
from scenefit.core.errors import ScenefitError
from scenefit.predict.students import ADAPTER_CONFIG, StudentError, choose_base, find_students

#: Answer tokens --max-model-len leaves room for (serve's chat_max_tokens_limit default).
ANSWER_TOKENS = 512
#: One image and no video per student request (vLLM's --limit-mm-per-prompt, JSON).
LIMIT_MM_PER_PROMPT = {"image": 1, "video": 0}
#: vLLM's accepted --max-lora-rank values (vllm.config.lora.MaxLoRARanks).
VLLM_MAX_LORA_RANKS: tuple[int, ...] = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Language-model linear layers vLLM applies LoRA to on Qwen2-family decoders (it packs
#: q/k/v into qkv_proj and gate/up into gate_up_proj; the adapter names the unpacked ones).
VLLM_LORA_LEAVES: frozenset[str] = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
#: How vLLM's Qwen2.5-VL loader renames checkpoint (and LoRA) module paths:
#: ``Qwen2_5_VLForConditionalGeneration.hf_to_vllm_mapper`` in vllm/model_executor/models/qwen2_5_vl.py
#: (checked at vLLM main 002d181a, the 0.11/0.12 line), applied by ``WeightsMapper._map_name`` in order,
#: every matching prefix in turn; LoRA names pass through it after ``base_model.model.`` is removed
#: (vllm/lora/utils.py ``parse_fine_tuned_lora_name``).
VLLM_QWEN25VL_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "language_model.model."),
    ("model.visual.", "visual."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
)
#: Where vLLM's Qwen2.5-VL keeps the decoder layers LoRA can adapt.
VLLM_LM_LAYERS = re.compile(r"^language_model\.model\.layers\.\d+\.(self_attn|mlp)\.[a-z_]+$")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?:A|B|magnitude_vector)(?:\.[^.]+)?\.weight$")
_VISION = re.compile(r"(^|\.)(visual|vision_tower|vision_model)(\.|$)")
_LM_LAYER = re.compile(r"(^|\.)(language_model\.)?layers\.\d+\.(self_attn|mlp)\.[a-z_]+$")


class VllmExportError(ScenefitError, ValueError):
    """Adapters vLLM cannot serve (the message lists every problem, per adapter)."""


@dataclass
class AdapterCheck:
    """One adapter as vLLM would see it."""

    name: str
    path: Path
    rank: int
    modules: list[str] = field(default_factory=list)  # LoRA-wrapped module paths, from the weights
    modules_to_save: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    decision_shift: Optional[float] = None  # largest ' In'/' Out' logit change on probe images, when probed
    asked_as: Optional[dict] = None  # how the student was trained to be asked (its StudentChat), for clients


def round_rank(rank: int) -> int:
    """The smallest vLLM --max-lora-rank value >= rank."""
    for r in VLLM_MAX_LORA_RANKS:
        if r >= rank:
            return r
    raise VllmExportError(f"LoRA rank {rank} exceeds vLLM's largest --max-lora-rank {VLLM_MAX_LORA_RANKS[-1]}")


def vllm_module_name(module: str) -> str:
    """The module path vLLM's Qwen2.5-VL gives an adapter's module path (PEFT's ``base_model.model.``
    removed, then :data:`VLLM_QWEN25VL_PREFIXES`)."""
    name = module.removeprefix("base_model.model.")
    for old, new in VLLM_QWEN25VL_PREFIXES:
        if name.startswith(old):
            name = new + name[len(old):]
    return name


def _weight_keys(folder: Path) -> list[str]:
    st = folder / "adapter_model.safetensors"
    if st.is_file():
        from safetensors import safe_open

        with safe_open(str(st), framework="pt") as f:
            return list(f.keys())
    binf = folder / "adapter_model.bin"
    if binf.is_file():
        import torch

        return list(torch.load(str(binf), map_location="cpu", weights_only=True).keys())
    raise VllmExportError(f"{folder}: no adapter_model.safetensors or adapter_model.bin")


def check_adapter(name: str, folder: Path) -> AdapterCheck:
    """Read an adapter folder (config and weight names, not the weights) and list what vLLM refuses."""
    cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    ranks = [int(cfg.get("r") or 0)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    check = AdapterCheck(name=name, path=folder.resolve(), rank=max(ranks))
    keys = _weight_keys(folder)
    modules = sorted({m.group("module") for k in keys if (m := _LORA_KEY.match(k))})
    check.modules = modules
    saved = list(cfg.get("modules_to_save") or [])
    full_weights = sorted({k.removeprefix("base_model.model.") for k in keys if not _LORA_KEY.match(k)})
    check.modules_to_save = saved or full_weights
    p = check.problems
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        p.append(f"is a {cfg.get('peft_type')} adapter; vLLM serves LoRA only")
    if check.modules_to_save:
        p.append(f"carries modules_to_save {check.modules_to_save}: fully trained copies of those modules, which "
                 "vLLM's LoRA loader refuses (it serves LoRA A/B matrices only; 'vLLM only supports modules_to_save "
                 "being None'). Export them merged (export-vllm --merge DIR: one full model per student), serve them with "
                 "`scenefit serve` or PEFT as they are, or retrain LoRA only "
                 "(scenefit train --set lora.modules_to_save=[]) — measured on the demo's tiny base, that keeps the "
                 "decisions but leaves most explanations unreadable")
    if cfg.get("use_dora"):
        p.append("uses DoRA, which vLLM does not serve")
    if str(cfg.get("bias", "none")) != "none":
        p.append(f"trains biases (bias={cfg.get('bias')!r}); vLLM serves LoRA A/B only")
    if not modules:
        p.append("holds no LoRA weights")
    vision = [m for m in modules if _VISION.search(m)]
    if vision:
        p.append(f"targets vision modules ({len(vision)}, e.g. {vision[0]}); vLLM applies LoRA to the language model only")
    other = [m for m in modules if m not in vision and not (_LM_LAYER.search(m) and m.rsplit(".", 1)[-1] in VLLM_LORA_LEAVES)]
    if other:
        leaves = sorted({m.rsplit(".", 1)[-1] for m in other})
        p.append(f"targets modules vLLM cannot serve with LoRA ({', '.join(leaves)}; e.g. {other[0]}); "
                 f"supported: the language model's {', '.join(sorted(VLLM_LORA_LEAVES))}")
    # A name vLLM maps to no module of its model loads as a silent no-op: refuse it here.
    unmapped = [m for m in modules if m not in vision and m not in other and not VLLM_LM_LAYERS.match(vllm_module_name(m))]
    if unmapped:
        p.append(f"{len(unmapped)} module name(s) match no vLLM Qwen2.5-VL module (e.g. {unmapped[0]} -> "
                 f"{vllm_module_name(unmapped[0])}); vLLM would load the adapter as a no-op")
    if check.rank > VLLM_MAX_LORA_RANKS[-1]:
        p.append(f"rank {check.rank} exceeds vLLM's largest --max-lora-rank {VLLM_MAX_LORA_RANKS[-1]}")
    return check


@dataclass
class EngineBounds:
    """What one student request needs from vLLM's engine (see the module docstring)."""

    max_model_len: int
    mm_processor_kwargs: Optional[dict] = None  # the students' pixel bounds, when they differ from the base's
    parts: dict = field(default_factory=dict)  # prompt / image / answer tokens behind max_model_len


def _pixel_bounds(folder: str | Path) -> dict:
    """{min_pixels, max_pixels} of the processor saved in ``folder`` (a student or a base)."""
    from scenefit.models.loading import load_processor

    size = load_processor(folder).image_processor.size
    return {"min_pixels": int(size.shortest_edge), "max_pixels": int(size.longest_edge)}


def engine_bounds(students: dict, base: str, answer_tokens: int = ANSWER_TOKENS) -> EngineBounds:
    """--max-model-len (and --mm-processor-kwargs) for ``students`` ({criterion: StudentInfo}) on ``base``."""
    from scenefit.models.loading import load_processor

    first = next(iter(students.values()))
    processor = load_processor(first.path)
    ip = processor.image_processor
    image_tokens = int(ip.size.longest_edge) // (int(ip.patch_size) * int(ip.merge_size)) ** 2
    longest_object = "x" * 100  # serve's max_object_chars default
    # each student's own prompt, as it was trained (its scenefit_student.json)
    prompt_tokens = max(len(processor.tokenizer(info.chat.prompt_text(processor, info.chat.request(c, longest_object)))
                            ["input_ids"]) for c, info in students.items())
    need = prompt_tokens + image_tokens + answer_tokens
    bounds = _pixel_bounds(first.path)
    try:
        base_bounds = _pixel_bounds(base)
    except (OSError, ValueError):  # a hub id not on this machine: name the students' bounds to be sure
        base_bounds = None
    return EngineBounds(max_model_len=-(-need // 256) * 256,
                        mm_processor_kwargs=None if bounds == base_bounds else bounds,
                        parts={"prompt_tokens": prompt_tokens, "image_tokens": image_tokens,
                               "answer_tokens": answer_tokens})


@dataclass
class VllmExport:
    base: str
    adapters: list[AdapterCheck]
    max_lora_rank: int
    forced: bool
    bounds: Optional[EngineBounds] = None
    merged: dict[str, Path] = field(default_factory=dict)  # served name -> merged checkpoint (--merge)

    def _engine_flags(self) -> list[str]:
        argv = ["--limit-mm-per-prompt", json.dumps(LIMIT_MM_PER_PROMPT)]
        if self.bounds is not None:
            argv += ["--max-model-len", str(self.bounds.max_model_len)]
            if self.bounds.mm_processor_kwargs and not self.merged:  # a merged folder carries its processor
                argv += ["--mm-processor-kwargs", json.dumps(self.bounds.mm_processor_kwargs)]
        return argv

    @property
    def merged_commands(self) -> dict[str, list[str]]:
        """One ``vllm serve`` per merged student (a plain checkpoint each, on ports from 8000)."""
        return {name: ["vllm", "serve", str(path), "--served-model-name", name, "--port", str(MERGED_FIRST_PORT + i),
                       *self._engine_flags()]
                for i, (name, path) in enumerate(self.merged.items())}

    @property
    def command(self) -> list[str]:
        """The one multi-LoRA server's command (a merged export has one per student instead:
        :attr:`merged_commands`)."""
        argv = ["vllm", "serve", self.base, "--enable-lora", "--lora-modules"]
        argv += [f"{a.name}={a.path}" for a in self.adapters]
        argv += ["--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(len(self.adapters))]
        return argv + self._engine_flags()

    @property
    def command_lines(self) -> list[str]:
        """The shell lines to run: one LoRA server, or one server per merged student."""
        if self.merged:
            return [shlex.join(c) for c in self.merged_commands.values()]
        return [shlex.join(self.command)]

    def to_json(self) -> dict:
        return {
            "base_model": self.base,
            "enable_lora": not self.merged,
            "merged": {name: str(path) for name, path in self.merged.items()},
            "merged_commands": {name: shlex.join(c) for name, c in self.merged_commands.items()},
            "lora_modules": [{"name": a.name, "path": str(a.path), "base_model_name": self.base} for a in self.adapters],
            "max_lora_rank": self.max_lora_rank,
            "max_loras": len(self.adapters),
            "limit_mm_per_prompt": LIMIT_MM_PER_PROMPT,
            "max_model_len": self.bounds.max_model_len if self.bounds else None,
            "max_model_len_parts": self.bounds.parts if self.bounds else None,
            "mm_processor_kwargs": self.bounds.mm_processor_kwargs if self.bounds else None,
            "adapter_ranks": {a.name: a.rank for a in self.adapters},
            "decision_shifts": {a.name: a.decision_shift for a in self.adapters if a.decision_shift is not None},
            # a client of `vllm serve` asks each adapter as it was trained: this prompt ({object} filled),
            # this system turn (null: none of its own), the image before or after the text, this answer layout
            "asked_as": {a.name: a.asked_as for a in self.adapters if a.asked_as is not None},
            "command": None if self.merged else self.command,
            "command_line": None if self.merged else shlex.join(self.command),
            "forced": self.forced,
            "problems": {a.name: a.problems for a in self.adapters if a.problems},
        }


#: A probe shift at or below this share of (1 + the largest base logit) is no change at all: fp32
#: rounding through the PEFT wrapper stays far below it, any trained update far above.
NO_OP_RELATIVE = 1e-6


def probe_items(n: int, seed: int = 0) -> list[tuple]:
    """``n`` probe inputs (image, object, box) for :func:`decision_logit_shifts`: seeded noise
    images of 112 x 112 pixels with a box in varying places. Any input serves, since the check
    is whether an adapter moves the decision logits at all, not whether it is right."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        x0, y0 = (int(v) for v in rng.integers(4, 56, 2))
        side = int(rng.integers(24, 52))
        image = Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), "RGB")
        out.append((image, ("cup", "dog", "car", "kite")[i % 4], (x0, y0, x0 + side, y0 + side)))
    return out


def decision_logit_shifts(base: str, adapters: dict[Criterion, Path], images: int = 4, device: str = "cpu",
                          seed: int = 0) -> dict[Criterion, float]:
    """Per adapter, the largest change it makes to the base's ' In'/' Out' decision logits on
    ``images`` boxed probe images (:func:`probe_items`), each adapter loaded with PEFT on the untouched base as
    a server loads it. 0 means it changes nothing beyond rounding (:data:`NO_OP_RELATIVE`): its names
    matched no module (a silent no-op) or its weights are zero."""
    import torch
    from peft import PeftModel

    from scenefit.core.images import draw_box
    from scenefit.models.loading import load_model, load_processor
    from scenefit.student.answer import AnswerFormat
    from scenefit.student.chat import StudentChat
    from scenefit.student.decision import decision_token_ids, scoring_batch
    from scenefit.student.metadata import read_student_meta

    first = next(iter(adapters.values()))
    processor = load_processor(first, padding_side="left")
    _, ids = decision_token_ids(processor)
    items = probe_items(images, seed)
    probes = [draw_box(im, box) for im, _, box in items]

    def asked_as_trained(path: Path) -> StudentChat:
        """The adapter's own questions (its metadata), its decision read on the fast path."""
        meta = read_student_meta(path)
        return (meta.chat if meta else StudentChat.packaged()).with_answer_format(AnswerFormat.DECISION_FIRST)

    chats = {c: asked_as_trained(Path(p)) for c, p in adapters.items()}

    def logits(model, crit: Criterion):
        chat = chats[crit]
        rows = [{"id": str(i), **chat.request(crit, obj)._asdict()} for i, (_, obj, _) in enumerate(items)]
        with torch.no_grad():
            out = model(**scoring_batch(processor, rows, probes, chat).to(device), logits_to_keep=1).logits[:, -1, :]
        return out[:, [ids[label] for label in ids]].float()

    model = load_model(base, dtype="fp32", device=device)
    before = {c: logits(model, c) for c in adapters}
    shifts: dict[Criterion, float] = {}
    for crit, path in adapters.items():
        peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=crit.value)
        shift = float((logits(peft_model, crit) - before[crit]).abs().max())
        floor = NO_OP_RELATIVE * (1.0 + float(before[crit].abs().max()))
        shifts[crit] = shift if shift > floor else 0.0
        model = peft_model.unload()  # the untouched base again for the next adapter
    return shifts


#: --merge: the first merged student's server listens here, the next ones on the following ports.
MERGED_FIRST_PORT = 8000


def merge_student(base: str, student: Path, dest: Path, device: str = "cpu") -> Path:
    """The student's adapter merged into its base and saved as a plain checkpoint (weights in fp32,
    the student's processor and chat template beside them) that vLLM, or transformers alone,
    loads as any model: the way to serve a student whose adapter vLLM's LoRA loader refuses
    (a trained ``lm_head`` copy), at the price of one full model per student. Written to a
    temporary folder and renamed into place, so a kill leaves no half-written checkpoint."""
    import shutil

    from peft import PeftModel

    from scenefit.models.loading import load_model, load_processor

    model = PeftModel.from_pretrained(load_model(base, dtype="fp32", device=device), str(student))
    merged = model.merge_and_unload()  # LoRA folded into the weights, a modules_to_save copy put in place
    # The trained lm_head copy is no longer the input embeddings: a config that still says tied
    # (the 3B's text config does) makes vLLM skip the saved lm_head and serve the embeddings instead.
    for cfg in (merged.config, getattr(merged.config, "text_config", None)):
        if cfg is not None and getattr(cfg, "tie_word_embeddings", False):
            cfg.tie_word_embeddings = False
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    load_processor(student).save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest.resolve()


def export_vllm(students, out: Optional[str | Path] = None, base: Optional[str] = None, force: bool = False,
                prefix: str = "scenefit-", criteria: Optional[list[Criterion]] = None, probe: int = 0,
                device: str = "cpu", merge: Optional[str | Path] = None) -> VllmExport:
    """Check every student adapter against vLLM's limits and write the serving spec (JSON) to ``out``.

    With ``probe`` > 0, also load each adapter on the base and refuse one that leaves the decision
    logits of ``probe`` probe images unchanged (:func:`decision_logit_shifts`). Raises
    VllmExportError listing every problem unless ``force`` (then the problems are kept in the file
    and the caller warns). With ``merge`` (a folder), every student is merged into its base there
    instead (:func:`merge_student`; one plain checkpoint and one ``vllm serve`` per student), which
    serves any adapter PEFT can merge, a trained ``lm_head`` included."""
    try:
        infos = find_students(students, criteria or list(CRITERIA))
        base_ref = choose_base(infos, base)
    except StudentError as e:
        raise VllmExportError(str(e)) from None
    checks = [check_adapter(f"{prefix}{c.value}", info.path) for c, info in infos.items()]
    for check, info in zip(checks, infos.values()):
        check.asked_as = info.chat.model_dump(mode="json")
    rank = round_rank(min(max(c.rank for c in checks), VLLM_MAX_LORA_RANKS[-1]))
    if merge is not None:
        for check in checks:
            check.problems = []  # the LoRA loader's limits do not apply to a merged checkpoint
        merged = {check.name: merge_student(base_ref, info.path, Path(merge) / crit.value, device=device)
                  for check, (crit, info) in zip(checks, infos.items())}
        return _write_spec(VllmExport(base_ref, checks, rank, forced=False, bounds=engine_bounds(infos, base_ref),
                                      merged=merged), out)
    if probe:
        shifts = decision_logit_shifts(base_ref, {c: info.path for c, info in infos.items()}, images=probe, device=device)
        for check, crit in zip(checks, infos):
            check.decision_shift = shifts[crit]
            if shifts[crit] == 0.0:
                check.problems.append(f"changes no decision logit on {probe} probe images: its weights "
                                      f"load as a no-op on {base_ref}")
    bad = [c for c in checks if c.problems]
    if bad and not force:
        lines = [f"{c.name} ({c.path}): {problem}" for c in bad for problem in c.problems]
        raise VllmExportError("vLLM cannot serve these adapters as they are (--force writes anyway):\n  " + "\n  ".join(lines))
    export = VllmExport(base_ref, checks, rank, forced=bool(bad), bounds=engine_bounds(infos, base_ref))
    return _write_spec(export, out)


def _write_spec(export: VllmExport, out: Optional[str | Path]) -> VllmExport:
    if out is not None:
        from scenefit.core.files import atomic_write_text

        atomic_write_text(json.dumps(export.to_json(), indent=2) + "\n", out)
    return export
