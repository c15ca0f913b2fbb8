"""A tiny Qwen2.5-VL built locally: same architecture, random weights, a locally trained
byte-level BPE tokenizer with Qwen's special tokens, the stock Qwen2.5-VL chat template and a real
image processor. Saved as an ordinary model folder that ``AutoProcessor`` and
``Qwen2_5_VLForConditionalGeneration.from_pretrained`` load offline.

    scenefit tiny-model runs/demo/model --config demo
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Iterator, Optional

from pydantic import Field, field_validator, model_validator

from scenefit.core.config import StageConfig
from scenefit.core.criteria import CRITERIA, LABELS
from scenefit.core.files import write_json
from scenefit.core.progress import Progress

#: Qwen2's special tokens, in Qwen's order (ids follow the learned vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

#: Qwen2's pre-tokenizer split (contractions, letters with one leading non-letter, single
#: digits, punctuation runs, newlines, whitespace).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TinyModelConfig(StageConfig):
    """Dimensions of the tiny random-weight Qwen2.5-VL (tests and the demo)."""

    seed: int = Field(0, description="Seed for the weights and the tokenizer corpus order.")
    vocab_size: int = Field(1024, ge=300, le=65536, description="Learned BPE vocabulary size, before special tokens.")
    hidden_size: int = Field(128, ge=16, description="Text hidden size (also the vision tower's output size).")
    intermediate_size: int = Field(256, ge=16, description="Text MLP width.")
    num_layers: int = Field(2, ge=1, description="Text decoder layers.")
    num_heads: int = Field(4, ge=1, description="Text attention heads.")
    num_kv_heads: int = Field(2, ge=1, description="Text key/value heads (grouped-query attention).")
    rope_theta: float = Field(
        10.0,
        gt=0,
        description="Text RoPE base. Qwen's 1e6 leaves a 2-layer model unable to tell image rows apart; 10 learns positions fast.",
    )
    vision_depth: int = Field(2, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(64, ge=16, description="Vision hidden size.")
    vision_heads: int = Field(4, ge=1, description="Vision attention heads.")
    vision_intermediate_size: int = Field(128, ge=16, description="Vision MLP width.")
    min_pixels: int = Field(56 * 56, ge=28 * 28, description="Image processor min pixels (size.shortest_edge).")
    max_pixels: int = Field(112 * 112, ge=28 * 28, description="Image processor max pixels (size.longest_edge); 112x112 -> 16 image tokens.")
    max_position_embeddings: int = Field(4096, ge=256, description="Longest sequence the text model accepts.")
    vision_pretrain_steps: int = Field(
        0, ge=0, le=100_000,
        description="Steps of perception pretraining for the vision tower (0 = leave it random). A random tower "
        "does not see the thin red box; see scenefit.testbed.tiny_vision.",
    )
    vision_pretrain_images: int = Field(
        1600, ge=16, le=100_000, description="Synthetic images drawn for the vision pretraining (1/8, at most 200, held out)."
    )
    vision_pretrain_seed: int = Field(
        7, description="World seed of those images; keep it apart from the demo world's seed so no demo sample is seen."
    )
    vision_pretrain_lr: float = Field(
        1e-3, gt=0, lt=1,
        description="Peak AdamW learning rate of the vision pretraining (a tenth of the steps warming up, then a cosine decay).",
    )
    vision_pretrain_image_size: int = Field(
        112, ge=56, le=1024, description="Side of the pretraining images (the demo world's image_size)."
    )
    knowledge_pretrain_steps: int = Field(
        0, ge=0, le=100_000,
        description="Steps of knowledge pretraining for the language model (0 = leave it random): the catalog's "
        "facts and captions of pictures of its own seed, so the base knows where things belong, as a real base "
        "does; see scenefit.testbed.tiny_knowledge.",
    )
    knowledge_pretrain_images: int = Field(
        600, ge=16, le=100_000, description="Synthetic pictures drawn for the knowledge captions (1/8 held out)."
    )
    knowledge_pretrain_seed: int = Field(
        11, description="World seed of those pictures; keep it apart from the demo world's seed so no demo sample is seen."
    )
    knowledge_pretrain_lr: float = Field(1e-3, gt=0, lt=1, description="AdamW learning rate of the knowledge pretraining.")
    pretrain_threads: int = Field(
        1, ge=0, le=256,
        description="Torch threads during the pretraining (0 = torch's default). 1: the tiny model's small matrices "
        "gain little from a second thread, and on busy cores idle threads spin (measured 7x the CPU time on 2 shared "
        "cores); the build's figures are then the same on machines with any number of cores.",
    )


    @field_validator("num_heads")
    @classmethod
    def _heads_divide(cls, v, info):
        h = info.data.get("hidden_size")
        if h and h % v:
            raise ValueError(f"hidden_size {h} is not divisible by num_heads {v}")
        if h and (h // v) % 4:
            raise ValueError(f"head_dim {h // v} must be a multiple of 4 (multimodal RoPE sections)")
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.vision_hidden_size % self.vision_heads:
            raise ValueError("vision_hidden_size must be divisible by vision_heads")
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        return self

    @property
    def mrope_section(self) -> list[int]:
        return mrope_section(self.hidden_size // self.num_heads)


def mrope_section(head_dim: int) -> list[int]:
    """Temporal/height/width split of head_dim/2 in Qwen's 1:1.5:1.5 proportion ([16, 24, 24]
    for the 3B's head_dim 128)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def chat_template() -> str:
    """The stock Qwen2.5-VL-Instruct chat template (what every hub copy of the model carries; it
    has no ``{% generation %}`` block, so training finds the answer by token structure)."""
    return (resources.files("scenefit.testbed") / "chat_template.jinja").read_text()


def _corpus() -> list[str]:
    """Text the tokenizer learns from: the project's prompts and answer vocabulary, so the
    student prompts and answers encode in few tokens."""
    from scenefit import prompts
    from scenefit.student.answer import DECISION_PREFIX

    lines = [prompts.teacher_prompt().text, prompts.student_system_prompt()]
    for c in CRITERIA:
        lines.append(prompts.student_prompt(c).text)
        lines.append(f"{c.display}: ")
        for lab in LABELS:
            lines.append(f"{DECISION_PREFIX} {lab.value}\n{c.display}: {lab.value}")
    words = (
        "the a an of in on at is are be can to and or with next beside above below near far its it this that "
        "object scene image photo red box ground sky floor grass sand road water wall table shelf counter "
        "stands rests sits lies hangs floats flies fits plausible implausible large small tiny huge big "
        "taller shorter bigger smaller than times person people car cow horse dog cat bird plane kite boat "
        "chair cup bottle banana zebra elephant giraffe sheep bus truck bicycle tree house lamp sofa bed "
        "beach street kitchen farm field park office room bathroom forest desert snow city indoor outdoor "
        "normal scale size location place spot surface support horizon line because so yes no not "
        "answer decision analysis summary final context judge only assistant system user helpful you "
        "nothing holding up The It A An This"
    ).split()
    lines.extend(" ".join(words[i : i + 12]) for i in range(0, len(words), 12))
    # The synthetic world's object and place names, so each is one token (a 2-layer model
    # links a name to the pixels far more easily than a string of byte pieces).
    from scenefit.testbed.catalog import CATEGORIES, SCENES, article, plural

    for name in CATEGORIES:
        lines.append(f"The {name} is {article(name)}; {plural(name)}. a {name} the {name}")
    for scene in SCENES.values():
        lines.append(f"{scene.place} the {scene.name} {scene.sky_word} {scene.ground_word} of the {scene.name}")
    lines.extend(str(i) for i in range(100))
    return lines


def build_tokenizer(cfg: TinyModelConfig):
    """A byte-level BPE trained here, wrapped as a Qwen2Tokenizer with the chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    corpus = _corpus() * 3
    tok.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    qt = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token=None,
        pad_token=None,
        unk_token=None,
        bos_token=None,
        errors="replace",
        add_prefix_space=False,
    )
    # Specials first, in Qwen's order, so their ids follow the vocabulary in that order;
    # only then name eos/pad (naming them earlier would add them out of order).
    qt.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    qt.eos_token = "<|im_end|>"
    qt.pad_token = "<|endoftext|>"
    qt.chat_template = chat_template()
    qt.model_max_length = cfg.max_position_embeddings
    return qt


def qwen_vl_config(tokenizer, text: dict, vision: dict, rope_theta: float, mrope_section: list[int],
                   vocab_size: Optional[int] = None, tie_word_embeddings: bool = False):
    """A Qwen2.5-VL config of the given dimensions whose special-token ids are ``tokenizer``'s.

    ``text``: hidden/intermediate sizes, layers, heads, KV heads (and optionally
    max_position_embeddings); ``vision``: depth, hidden/intermediate sizes, heads,
    fullatt_block_indexes. Patch 14, 2×2 merge, 112 px windows as in Qwen2.5-VL. ``vocab_size``
    defaults to the tokenizer's (a real checkpoint's larger table just leaves ids unused).
    """
    from transformers import Qwen2_5_VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text_config = dict(
        text,
        vocab_size=vocab_size or len(tokenizer),
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": mrope_section},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=tie_word_embeddings,
    )
    vision_config = dict(vision, out_hidden_size=text["hidden_size"], window_size=112, patch_size=14,
                         spatial_merge_size=2, temporal_patch_size=2)
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )


def set_generation_defaults(model, tokenizer) -> None:
    """Greedy, stop on <|im_end|> or <|endoftext|>, pad with <|endoftext|> (Qwen's chat usage)."""
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = [end, pad]
    model.generation_config.pad_token_id = pad
    model.generation_config.do_sample = False


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` inside the block (0: left as they are)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pretrain(model, image_processor, tokenizer, cfg: TinyModelConfig, progress: Optional[Progress]):
    """The vision pretraining (when asked for), the processor, then the knowledge pretraining
    (when asked for): ``(vision record, processor, knowledge record)``, records None when skipped."""
    from scenefit.models.loading import build_processor

    vision_record = None
    if cfg.vision_pretrain_steps:
        from scenefit.testbed.tiny_vision import pretrain_vision

        vision_record = pretrain_vision(
            model, image_processor, cfg.vision_pretrain_steps, images=cfg.vision_pretrain_images,
            seed=cfg.vision_pretrain_seed, lr=cfg.vision_pretrain_lr, image_size=cfg.vision_pretrain_image_size,
            progress=progress,
        )
    processor = build_processor(image_processor, tokenizer)
    knowledge_record = None
    if cfg.knowledge_pretrain_steps:
        from scenefit.testbed.tiny_knowledge import pretrain_language

        knowledge_record = pretrain_language(
            model, processor, cfg.knowledge_pretrain_steps, images=cfg.knowledge_pretrain_images,
            seed=cfg.knowledge_pretrain_seed, lr=cfg.knowledge_pretrain_lr, image_size=cfg.vision_pretrain_image_size,
            progress=progress,
        )
    return vision_record, processor, knowledge_record


def build_tiny_model(out_dir: str | Path, cfg: Optional[TinyModelConfig] = None,
                     progress: Optional[Progress] = None) -> Path:
    """Build, save and return the folder of a tiny random Qwen2.5-VL (seconds on a CPU; about a
    minute more with ``vision_pretrain_steps`` and half a minute with ``knowledge_pretrain_steps``,
    whose progress bars ``progress`` shows)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from scenefit.models.loading import save_processor

    cfg = cfg or TinyModelConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(cfg)
    config = qwen_vl_config(
        tokenizer,
        dict(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
             num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
             max_position_embeddings=cfg.max_position_embeddings),
        dict(depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_intermediate_size,
             num_heads=cfg.vision_heads, fullatt_block_indexes=[cfg.vision_depth - 1]),
        rope_theta=cfg.rope_theta, mrope_section=cfg.mrope_section,
    )
    torch.manual_seed(cfg.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    set_generation_defaults(model, tokenizer)

    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels})
    with torch_threads(cfg.pretrain_threads):
        vision_record, processor, knowledge_record = _pretrain(model, image_processor, tokenizer, cfg, progress)
    model.save_pretrained(str(out))
    save_processor(processor, out)
    language = ("language model pretrained on the synthetic world's catalog facts and captions of its own pictures"
                if knowledge_record else "random language model")
    vision = ("vision tower pretrained on synthetic images to see the box colour, each cell's colour, the box's "
              "height next to the person and its bottom against the ground line"
              if vision_record else "random vision tower")
    note = (f"tiny Qwen2.5-VL built by scenefit: {language}; {vision} (SYNTHETIC; no in/out labels, student prompts "
            "or demo samples)" if vision_record or knowledge_record
            else "tiny random-weight Qwen2.5-VL built by scenefit; not a trained model")
    # the machine's arithmetic, which the pretraining's figures depend on (docs/demo-results.md)
    built_with = {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                  "pretrain_threads": cfg.pretrain_threads or torch.get_num_threads()}
    write_json({"note": note, **cfg.model_dump(), "vision_pretraining": vision_record,
                "knowledge_pretraining": knowledge_record, "built_with": built_with}, out / "scenefit_tiny.json")
    return out
