"""Small trained students for tests and benchmarks, built in seconds on CPU.

    from scenefit.testbed.toy_students import build_toy_students, toy_items
    students = build_toy_students(base_dir, out_dir, steps=60)   # out_dir/<criterion>/
    items, truth = toy_items(32, seed=1)                          # [(PIL image, object, box)]

Each student is what ``scenefit train`` writes (a PEFT LoRA adapter on the language model's
q/k/v/o projections with a trainable ``lm_head`` copy, the processor beside it, and
``scenefit_student.json``), trained for a few steps on a toy scene whose truth per criterion is
a visible cue: location — the box stands on the ground line or floats high above it; size —
the box is small or very large; co-occurrence — the ground is grass or water. The answers use
the real student prompts and answer format, so the fast path and generation are exercised as
in production. Not a stand-in for ``scenefit train``: it exists so inference can be tested and
measured before (and independently of) real students.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.core.images import BoxStyle, draw_box
from scenefit.models.loading import load_model, load_processor, save_student_processor
from scenefit.student.answer import AnswerFormat, render_student_answer
from scenefit.student.chat import StudentChat
from scenefit.student.metadata import StudentMeta, base_record, loadable_base, write_student_meta

#: PEFT target: the language model's attention projections only (what vLLM can serve).
LM_ATTENTION_TARGETS = r"model\.language_model\.layers\.\d+\.self_attn\.(q|k|v|o)_proj"
OBJECTS = ("cow", "dog", "car", "chair", "zebra", "horse")
SIZE = 112


def toy_scene(rng: random.Random, truth: dict[Criterion, Label]) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """An unboxed toy image and the box of its object, drawn so that ``truth`` holds."""
    horizon = 64
    im = Image.new("RGB", (SIZE, SIZE), (135 + rng.randint(-20, 20), 190 + rng.randint(-20, 20), 235))
    ground = (40, 90, 200) if truth[Criterion.CO_OCCURRENCE] is Label.OUT else (70, 150, 50)
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, horizon, SIZE, SIZE), fill=tuple(c + rng.randint(-15, 15) for c in ground))
    side = rng.randint(56, 80) if truth[Criterion.SIZE] is Label.OUT else rng.randint(14, 24)
    x0 = rng.randint(0, SIZE - side)
    if truth[Criterion.LOCATION] is Label.OUT:
        y1 = min(side + rng.randint(0, 6), horizon - 14)
    else:
        y1 = min(SIZE, horizon + rng.randint(10, 30))
    y1 = max(y1, side)  # the box stays inside the image (a negative corner is a bad_box)
    box = (x0, y1 - side, x0 + side, y1)
    draw.rectangle((box[0] + 4, box[1] + 4, box[2] - 5, box[3] - 5), fill=(90, 60, 30))
    return im, box


_SENTENCES = {
    (Criterion.LOCATION, Label.IN): "The {o} stands on the ground.",
    (Criterion.LOCATION, Label.OUT): "The {o} floats in the sky above the ground.",
    (Criterion.SIZE, Label.IN): "The {o} is small next to the scene, a normal scale.",
    (Criterion.SIZE, Label.OUT): "The {o} is huge, far too big for the scene.",
    (Criterion.CO_OCCURRENCE, Label.IN): "A {o} fits a field of grass.",
    (Criterion.CO_OCCURRENCE, Label.OUT): "A {o} is not found in the water.",
}


def toy_items(n: int, seed: int = 0) -> tuple[list[tuple[Image.Image, str, tuple[int, int, int, int]]],
                                             list[dict[Criterion, Label]]]:
    """``n`` unboxed items (image, object, box) and their truth per criterion."""
    rng = random.Random(seed)
    items, truths = [], []
    for _ in range(n):
        truth = {c: rng.choice((Label.IN, Label.OUT)) for c in CRITERIA}
        im, box = toy_scene(rng, truth)
        items.append((im, rng.choice(OBJECTS), box))
        truths.append(truth)
    return items, truths


def toy_answer(criterion: Criterion, label: Label, object_name: str,
               answer_format: AnswerFormat = AnswerFormat.DECISION_FIRST) -> str:
    return render_student_answer(criterion, label, _SENTENCES[(criterion, label)].format(o=object_name), answer_format)


def build_toy_students(base_dir: str | Path, out_dir: str | Path, criteria: Sequence[Criterion] = CRITERIA,
                       steps: int = 60, rank: int = 16, modules_to_save: Optional[Sequence[str]] = ("lm_head",),
                       lr: float = 2e-3, batch_size: int = 8, seed: int = 0, box_width: Optional[int] = None,
                       joint: bool = False, answer_format: AnswerFormat = AnswerFormat.DECISION_FIRST,
                       device: str = "cpu", dtype: str = "fp32") -> Path:
    """Train (``steps`` > 0) or just initialise (``steps`` = 0: random LoRA weights, so every
    adapter differs from the base and from the others) one adapter per criterion on
    ``base_dir``; save them as student folders under ``out_dir``.

    ``joint=True`` trains one adapter on all criteria's prompts and saves it for each (a third
    of the CPU time — for tests that need trained answers but not distinct adapters).
    ``answer_format``: the answers it learns, asked with the packaged prompts of that format and
    recorded in its metadata as ``scenefit train`` does.
    ``device``/``dtype``: where the base is loaded to make the adapters (e.g. a full-size base on a GPU)."""
    import torch

    out = Path(out_dir)
    base_dir = loadable_base(base_record(str(base_dir), out))  # what adapter_config.json records, as train does
    processor = load_processor(base_dir, padding_side="right")
    crits = [Criterion(c) for c in criteria]
    chat = StudentChat.packaged(answer_format)
    groups = [crits] if (joint and steps > 0) else [[c] for c in crits]
    for k, group in enumerate(groups):
        torch.manual_seed(seed + k)
        model = _fresh_adapter(base_dir, rank, modules_to_save, random_init=steps == 0, device=device, dtype=dtype)
        if steps > 0:
            _train(model, processor, group, steps, lr, batch_size, random.Random(seed * 1000 + k), box_width, chat)
        for crit in group:
            folder = out / crit.value
            model.save_pretrained(str(folder))
            save_student_processor(processor, folder)
            # a toy of the test bed: shown with the SYNTHETIC notice wherever it answers
            write_student_meta(StudentMeta.for_chat(
                chat, crit.value, **base_record(base_dir, out), toy=True, synthetic=True,
                notice=SYNTHETIC_NOTICE, train_steps=steps, trained_on=[c.value for c in group], rank=rank,
                box_style=BoxStyle(width=box_width) if steps > 0 else None,  # the boxes _train drew
            ), folder)
    return out


def _fresh_adapter(base_dir, rank: int, modules_to_save, random_init: bool, device: str = "cpu", dtype: str = "fp32"):
    from peft import LoraConfig, get_peft_model

    base = load_model(base_dir, dtype=dtype, device=device)
    lcfg = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LM_ATTENTION_TARGETS,
                      modules_to_save=list(modules_to_save) if modules_to_save else None,
                      init_lora_weights=not random_init)
    return get_peft_model(base, lcfg)


def _train(model, processor, crits: Sequence[Criterion], steps: int, lr: float, batch_size: int,
           rng: random.Random, box_width: Optional[int], chat: StudentChat) -> None:
    """A plain loop: loss on the answer tokens only (as the trainer masks the prompt)."""
    import torch

    tok = processor.tokenizer
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        texts, images, answer_lens = [], [], []
        for _ in range(batch_size):
            truth = {c: rng.choice((Label.IN, Label.OUT)) for c in CRITERIA}
            im, box = toy_scene(rng, truth)
            obj = rng.choice(OBJECTS)
            crit = rng.choice(list(crits))
            prompt = chat.prompt_text(processor, chat.request(crit, obj))
            answer = toy_answer(crit, truth[crit], obj, chat.answer_format) + "<|im_end|>"
            texts.append(prompt + answer)
            images.append(draw_box(im, box, width=box_width))
            answer_lens.append(len(tok(answer, add_special_tokens=False)["input_ids"]))
        batch = processor(text=texts, images=images, padding=True, return_tensors="pt")
        labels = torch.full_like(batch["input_ids"], -100)
        lengths = batch["attention_mask"].sum(1).tolist()
        for r, (n, a) in enumerate(zip(lengths, answer_lens)):
            labels[r, n - a : n] = batch["input_ids"][r, n - a : n]
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
