"""Loading Qwen2.5-VL models and processors — the same code for the tiny model and the 3B/72B.

The one environment quirk lives here: transformers 5.x builds a Qwen2.5-VL processor with a
video processor, and the video processor needs torchvision. Where torchvision is missing (the
CPU wheel of torch used here has no working torchvision), :func:`load_processor` builds an
images-only processor instead; :func:`save_processor` then also writes the video processor's
config by hand, so the folder still loads where torchvision exists.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from scenefit.core.errors import ScenefitError
from scenefit.core.files import write_json

#: Video processor settings written beside an images-only processor (Qwen2-VL defaults) so a
#: folder saved here loads with AutoProcessor on a machine that has torchvision.
_VIDEO_PROCESSOR_CONFIG = {
    "video_processor_type": "Qwen2VLVideoProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
    "do_resize": True,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28},
}


@lru_cache(maxsize=None)
def torchvision_available() -> bool:
    """True when torchvision imports *and* its C ops load (a CUDA-linked wheel beside a CPU
    torch imports but fails on `torchvision::nms`)."""
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torch
        import torchvision  # noqa: F401
        from torchvision.ops import nms  # noqa: F401

        nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
        return True
    except Exception:
        return False


def _images_only_processor_class():
    from transformers import Qwen2_5_VLProcessor

    class ImagesOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
        """Qwen2.5-VL processor without its video part (used only when torchvision is absent).

        It saves as a plain ``Qwen2_5_VLProcessor`` so saved folders stay standard.
        """

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            kwargs.pop("video_processor", None)
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

        def to_dict(self):
            d = super().to_dict()
            d["processor_class"] = "Qwen2_5_VLProcessor"
            return d

    # Saved configs name the public class, never this local one.
    ImagesOnlyQwen2_5_VLProcessor.__name__ = "Qwen2_5_VLProcessor"
    return ImagesOnlyQwen2_5_VLProcessor


def pixel_size(min_pixels: Optional[int], max_pixels: Optional[int]) -> dict[str, int]:
    """transformers 5 keeps min/max pixels in the image processor's ``size`` dict."""
    size = {}
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    return size


def load_processor(
    name_or_path: str | Path,
    min_pixels: Optional[int] = None,
    max_pixels: Optional[int] = None,
    padding_side: Optional[str] = None,
):
    """Processor of a Qwen2.5-VL folder or hub id; min/max pixels override the saved ones."""
    from transformers import AutoProcessor

    size = pixel_size(min_pixels, max_pixels)
    if torchvision_available():
        proc = AutoProcessor.from_pretrained(str(name_or_path))
        if size:
            ip = proc.image_processor
            ip.size = {"shortest_edge": ip.size.shortest_edge, "longest_edge": ip.size.longest_edge, **size}
    else:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(name_or_path))
        if size:
            current = {"shortest_edge": image_processor.size.shortest_edge, "longest_edge": image_processor.size.longest_edge}
            image_processor.size = {**current, **size}
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        chat_template = _read_chat_template(Path(str(name_or_path)))
        proc = _images_only_processor_class()(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template or tokenizer.chat_template
        )
    if padding_side:
        proc.tokenizer.padding_side = padding_side
    return proc


def _read_chat_template(folder: Path) -> Optional[str]:
    for name in ("chat_template.jinja", "chat_template.json"):
        p = folder / name
        if p.is_file():
            text = p.read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def build_processor(image_processor, tokenizer):
    """A Qwen2.5-VL processor from an image processor (PIL) and a tokenizer carrying the chat
    template: the full one with its video part where torchvision works, else the images-only one
    (see :func:`_images_only_processor_class`)."""
    if torchvision_available():
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(size=image_processor.size), tokenizer=tokenizer,
                                   video_processor=Qwen2VLVideoProcessor(), chat_template=tokenizer.chat_template)
    return _images_only_processor_class()(image_processor=image_processor, tokenizer=tokenizer,
                                          chat_template=tokenizer.chat_template)


def save_processor(processor, out_dir: str | Path) -> None:
    """Save a processor so it loads with and without torchvision."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(str(out))
    if getattr(processor, "video_processor", None) is None:
        vp = dict(_VIDEO_PROCESSOR_CONFIG)
        ip = processor.image_processor
        vp.update(patch_size=ip.patch_size, temporal_patch_size=ip.temporal_patch_size, merge_size=ip.merge_size)
        write_json(vp, out / "video_preprocessor_config.json")


#: The processor class a student folder names. transformers 5.24's ``Qwen2_5_VLProcessor`` always
#: loads a video processor, and every video processor needs torchvision, which no wheel provides
#: beside the CPU torch pinned here; ``PaddleOCRVLProcessor`` is transformers' own image +
#: tokenizer processor with the same placeholder rule (one ``image_token`` per grid cell t·h·w /
#: merge_size², transformers/models/paddleocr_vl/processing_paddleocr_vl.py) and no video part, so
#: ``AutoProcessor.from_pretrained(student)`` loads with plain transformers, torchvision or not.
#: tests/unit/test_student_processor.py checks it gives exactly the Qwen2.5-VL processor's inputs.
STUDENT_PROCESSOR_CLASS = "PaddleOCRVLProcessor"


def save_student_processor(processor, out_dir: str | Path) -> None:
    """Save a student's processor as an images-only one that ``AutoProcessor`` loads anywhere
    (:data:`STUDENT_PROCESSOR_CLASS`): the image processor, the tokenizer (naming its image
    token, which that class reads from it) and the chat template; no video processor."""
    out = Path(out_dir)
    images_only = _images_only_processor_class()(image_processor=processor.image_processor,
                                                 tokenizer=processor.tokenizer, chat_template=processor.chat_template)
    images_only.save_pretrained(str(out))
    (out / "video_preprocessor_config.json").unlink(missing_ok=True)
    for name, extra in (("processor_config.json", {}), ("tokenizer_config.json", {"image_token": processor.image_token})):
        path = out / name
        if path.is_file():
            write_json({**json.loads(path.read_text()), "processor_class": STUDENT_PROCESSOR_CLASS, **extra}, path)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class DeviceError(ScenefitError, ValueError):
    """A device setting this machine cannot honour (said before any weights are loaded)."""


def check_device(device: str) -> str:
    """``device`` if this machine has it, else :class:`DeviceError` naming the setting."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"device {device!r} is not a torch device (expected cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r}: no CUDA GPU is visible to torch {torch.__version__}; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r}: MPS is not available here; use cpu")
    return device


def resolve_dtype(dtype: str, device: str):
    """'auto' -> bf16 on a CUDA device with bf16, else fp32 (CPU training/eval stay in fp32)."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
                "fp32": torch.float32, "float32": torch.float32}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected auto, bf16, fp16 or fp32") from None


def load_model(name_or_path: str | Path, dtype: str = "auto", device: Optional[str] = None, attn_implementation: Optional[str] = None,
               vision_attention: str = "packed"):
    """A Qwen2.5-VL (or any image-text-to-text model through the Auto class) in eval mode.

    ``vision_attention``: "packed" runs each vision block's windows in one attention call,
    "transformers" keeps transformers' call per window (see scenefit.models.vision_attention)."""
    from transformers import AutoConfig

    from scenefit.models.vision_attention import check_vision_attention, set_vision_attention

    check_vision_attention(vision_attention)
    device = check_device(device or default_device())
    torch_dtype = resolve_dtype(dtype, device)
    cfg = AutoConfig.from_pretrained(str(name_or_path))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if cfg.model_type in ("qwen2_5_vl", "qwen2_vl"):
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

        cls = Qwen2_5_VLForConditionalGeneration if cfg.model_type == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
    else:
        from transformers import AutoModelForImageTextToText as cls  # type: ignore[no-redef]
    try:
        model = cls.from_pretrained(str(name_or_path), **kwargs)
    except ImportError as e:
        if not attn_implementation:
            raise
        # e.g. flash_attention_2 without the flash-attn package: say which setting asked for it
        raise ValueError(f"attn_implementation={attn_implementation} cannot be used here ({e}); "
                         "leave it unset for transformers' default (sdpa)") from None
    set_vision_attention(model, vision_attention)
    model.to(device)
    model.eval()
    return model


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


@dataclass
class Generated:
    """What :func:`generate_text` returns, one entry per batch row."""

    texts: list[str]  # the new text up to (not including) the end token
    counts: list[int]  # new tokens, the end token included when there was one
    stopped: list[bool]  # True: ended on an end token; False: hit max_new_tokens
    first_logits: Any = None  # logits of the first generated position (when asked)
    completions: list = None  # per row, the new token ids up to the end token (when step_logits)
    step_logits: Any = None  # per generated position, the (batch, vocab) logits (when asked)


def generate_text(model, tokenizer, inputs: dict, max_new_tokens: int, temperature: Optional[float] = 0.0,
                  top_p: Optional[float] = None, seed: Optional[int] = None,
                  stopping_criteria: Optional[list] = None, first_logits: bool = False,
                  step_logits: bool = False) -> Generated:
    """One batched ``generate()`` over already encoded, left-padded ``inputs`` — the one
    generation call of students (Predictor, training-time eval) and in-process teachers.

    Greedy is plain argmax (the stock Qwen2.5-VL generation config's repetition_penalty 1.05
    is left out, as in training and the fast path); ``temperature`` > 0 samples; ``temperature`` None
    samples with the model's own generation config (its temperature, top-k, top-p, repetition
    penalty: ``do_sample=True`` and nothing else, as the authors' teacher script). ``step_logits``
    also keeps every step's raw logits and each row's token ids (for log-probabilities; the
    logits of every step stay in memory until the batch ends)."""
    import torch

    gen_cfg = model.generation_config
    eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=int(max_new_tokens), return_dict_in_generate=True,
                                  output_logits=first_logits or step_logits, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    if stopping_criteria:
        kwargs["stopping_criteria"] = list(stopping_criteria)
    if temperature is None:
        kwargs.update(do_sample=True)  # the rest from model.generation_config
    elif temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature))
        if top_p is not None:
            kwargs["top_p"] = float(top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None, repetition_penalty=1.0)
    if seed is not None:
        torch.manual_seed(int(seed))
    out = model.generate(**inputs, **kwargs)
    new = out.sequences[:, inputs["input_ids"].shape[1]:]
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) | {tokenizer.pad_token_id}
    result = Generated([], [], [], out.logits[0] if first_logits else None,
                       [] if step_logits else None, out.logits if step_logits else None)
    for row in new.tolist():
        n = next((k for k, t in enumerate(row) if t in eos_ids), None)
        completion = row if n is None else row[:n]
        result.texts.append(tokenizer.decode(completion, skip_special_tokens=True))
        result.counts.append(len(completion) + (0 if n is None else 1))
        result.stopped.append(n is not None)
        if step_logits:
            result.completions.append(completion)
    return result
