"""The Predictor: one base model, the three criterion adapters loaded once, a fast decision
path and batched explanations.

    from scenefit.predict import Predictor
    pred = Predictor.from_students("runs/demo/students")        # base + 3 adapters, once
    out = pred.predict([("photo.jpg", "zebra", (10, 20, 200, 220))], explain=True)
    out[0].to_json()   # {"criteria": {"location": {...}, ...}, "final": "Out-of-context"}

Each criterion is asked as its student was trained (its prompt, system turn, image position and
answer format, read from ``scenefit_student.json``: :class:`scenefit.student.chat.StudentChat`);
the baseline without students is asked the packaged decision-first prompts.

Fast path: the prompt plus the forced answer prefix ``Decision:`` goes through the model once
and the first-token logits of the two alternatives (`` In-context`` / `` Out-of-context``)
decide; ``probability`` is their two-way softmax. The prefix is tokenized together with the
prompt exactly as training saw it (checked when the predictor starts: the prompt, the prefix
and each alternative must tokenize as concatenations of their own tokens, and the two
alternatives must start with different tokens).

Explanations: batched greedy generation with left padding and a bounded number of new tokens;
by default it continues from the forced prefix, so the prefill that produces the text also
gives the decision logits. The label reported stays the fast decision (one decision per
criterion, whatever ``explain`` says); the label the generated text names is kept beside it
(``generated_label``) and the result says whether the two agree (``agrees_with_fast``).

Reasoning-first students (``answer_format`` in their metadata) have no fast path: their whole
answer is generated and the label read from its ``Final decision:`` line (None when unreadable,
with no logits to fall back on), whatever ``explain`` says; :meth:`Predictor.fast_path_note` names them.

Adapters switch per batch (``set_adapter``); the vision tower is shared by all three, so when
no adapter touches it each image is encoded once per batch and its features are reused.
A lock serialises model calls, so one Predictor can serve several threads.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from scenefit.core.criteria import Criterion, Label
from scenefit.core.images import BOX_RED
from scenefit.core.progress import Progress
from scenefit.models.loading import default_device, generate_text, load_model, load_processor
from scenefit.predict.config import PredictConfig
from scenefit.predict.items import ItemError, PredictItem, prepare_image, to_item
from scenefit.predict.results import CriterionResult, Prediction
from scenefit.predict.students import (
    StudentError,
    StudentInfo,
    StudentsArg,
    choose_base,
    fast_path_note,
    find_students,
    module_bytes,
)
from scenefit.student.answer import AnswerFormat, parse_student_answer
from scenefit.student.chat import StudentChat
from scenefit.student.decision import DecisionTokenError, decide, decision_token_ids, two_way
from scenefit.student.metadata import trained_box_style

__all__ = ["BatchPixels", "DecisionTokenError", "Predictor", "decision_token_ids"]


@dataclass
class BatchPixels:
    """One batch's images as the processor prepared them, kept for the batch's other criteria."""

    tensors: dict = field(default_factory=dict)  # pixel_values, image_grid_thw, on the model's device
    tokens: list[int] = field(default_factory=list)  # image placeholder tokens per image
    type_ids: bool = False  # the processor also gives mm_token_type_ids


class Predictor:
    """Judge items on the three criteria with one base model and one adapter per criterion.

    Build with :meth:`from_students`, :meth:`baseline` or :meth:`from_config`, then call
    :meth:`predict`. ``adapters`` maps each criterion to its PEFT adapter name (None: baseline).
    """

    def __init__(self, model, processor, adapters: Optional[dict[Criterion, str]], config: PredictConfig,
                 base: str, students: Optional[dict[Criterion, StudentInfo]] = None):
        import torch

        self.config = config
        self.base = base
        self.students = students or {}
        self.adapters = dict(adapters) if adapters else {}
        self.peft_model = model if self.adapters else None
        # The transformers model with the LoRA layers injected; calling it directly keeps
        # generate() and the multimodal kwargs exactly as transformers defines them.
        self.model = model.get_base_model() if self.adapters else model
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        self.tokenizer = processor.tokenizer
        # how each criterion is asked, as its student was trained (the baseline: the packaged decision-first prompts)
        self.chats: dict[Criterion, StudentChat] = {c: i.chat for c, i in self.students.items()}
        self.prefix_ids, self.decision_ids = decision_token_ids(processor, next(iter(self.chats.values()), None))
        self.device = next(self.model.parameters()).device
        self.dtype = next(self.model.parameters()).dtype
        self.answer_formats: dict[Criterion, AnswerFormat] = {c: ch.answer_format for c, ch in self.chats.items()}
        self.criteria: tuple[Criterion, ...] = tuple(self.adapters) if self.adapters else tuple(
            Criterion.parse(c) for c in config.criteria)
        self._lock = threading.RLock()
        self._prompt_cache: dict[tuple[Criterion, str, bool, bool], str] = {}
        self.share_vision = (
            config.share_vision
            and "mm_encoder_outputs" in inspect.signature(self.model.forward).parameters
            and hasattr(self.model, "get_image_features")
            and not self._adapters_touch_vision()
        )
        # the box drawn on images that are not boxed yet: the settings', else the students' training's
        self.box_width, self.box_color, self.box_source = drawn_box(config, self.students.values())
        self.generated_tokens: list[int] = []  # new tokens per explanation, from the last predict()
        self._torch = torch

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_students(cls, students: StudentsArg, base: Optional[str] = None, device: Optional[str] = None,
                      dtype: str = "auto", batch_size: int = 16, config: Optional[PredictConfig] = None,
                      criteria: Optional[Sequence[str | Criterion]] = None) -> "Predictor":
        """Load the base once and every criterion's adapter onto it (PEFT multi-adapter).

        ``students`` is a folder with one subfolder per criterion, or {criterion: folder}.
        ``base`` overrides the base model named in the students' metadata.
        """
        from peft import PeftModel

        cfg = _merge_config(config, device, dtype, batch_size, criteria)
        wanted = [Criterion.parse(c) for c in cfg.criteria]
        infos = find_students(students, wanted)
        base_ref = choose_base(infos, base or cfg.base)
        dev = cfg.device or default_device()
        model = _load_base(base_ref, cfg, dev, given=bool(base or cfg.base))
        first, *rest = infos.values()
        # autocast_adapter_dtype=False: on a bf16 GPU base the adapters stay bf16 too (no fp32 copies).
        with _adapter_load(first):
            model = PeftModel.from_pretrained(model, str(first.path), adapter_name=first.criterion.value,
                                              is_trainable=False, autocast_adapter_dtype=False)
        for info in rest:
            with _adapter_load(info):
                model.load_adapter(str(info.path), adapter_name=info.criterion.value, is_trainable=False,
                                   autocast_adapter_dtype=False)
        model.to(dev)
        model.eval()
        processor = load_processor(_processor_source(first.path, base_ref))
        return cls(model, processor, {c: c.value for c in infos}, cfg, base_ref, infos)

    @classmethod
    def baseline(cls, base: str, device: Optional[str] = None, dtype: str = "auto", batch_size: int = 16,
                 config: Optional[PredictConfig] = None,
                 criteria: Optional[Sequence[str | Criterion]] = None) -> "Predictor":
        """The untrained base model asked the student prompts (the evaluation baseline)."""
        cfg = _merge_config(config, device, dtype, batch_size, criteria)
        dev = cfg.device or default_device()
        model = load_model(base, dtype=cfg.dtype, device=dev, attn_implementation=cfg.attn_implementation)
        return cls(model, load_processor(base), None, cfg, str(base))

    @classmethod
    def from_config(cls, cfg: PredictConfig, students: Optional[StudentsArg] = None) -> "Predictor":
        """From a ``predict`` config section; without students (argument or cfg.students) and
        with cfg.base set, the baseline."""
        students = students if students is not None else cfg.students
        if students is None:
            if not cfg.base:
                raise ValueError("predict config names neither students nor a base model")
            return cls.baseline(cfg.base, config=cfg)
        return cls.from_students(students, config=cfg)

    # ---- information --------------------------------------------------------------------

    @property
    def is_baseline(self) -> bool:
        return not self.adapters

    def weight_bytes(self) -> int:
        """Resident bytes of all weights (base once + every adapter), shared storage counted once."""
        return module_bytes(self.peft_model if self.peft_model is not None else self.model)

    def info(self) -> dict[str, Any]:
        """What is loaded (for /v1/models, logs and reports)."""
        return {
            "base": self.base,
            "baseline": self.is_baseline,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "criteria": [c.value for c in self.criteria],
            "adapters": {c.value: str(self.students[c].path) for c in self.students},
            "share_vision": self.share_vision,
            "answer_formats": {c.value: self.answer_format(c).value for c in self.criteria},
            "weight_bytes": self.weight_bytes(),
            "batch_size": self.config.batch_size,
            "box": {"width": self.box_width, "color": list(self.box_color), "from": self.box_source},
        }

    # ---- prediction ---------------------------------------------------------------------

    def predict(self, items: Iterable[Any], explain: Optional[bool] = None,
                criteria: Optional[Sequence[str | Criterion]] = None,
                progress: Optional[Progress] = None, use_adapters: bool = True,
                box_width: Optional[int] = None) -> list[Prediction]:
        """Judge every item (see :mod:`scenefit.predict.items` for the accepted forms).

        Items that cannot be judged (missing image, box outside the image, …) come back as a
        Prediction with ``error = {"code", "message"}``; the others go on. ``criteria`` narrows
        the judged criteria; ``use_adapters=False`` runs the base model without the adapters
        (the baseline) on an already loaded Predictor. ``progress.advance(n)`` is called as items finish.
        ``box_width``: the red box's width on items drawn here (default: :attr:`box_width`, the
        setting's or the students' training's, see :func:`drawn_box`).
        """
        box_width = self.box_width if box_width is None else box_width
        explain = self.config.explain if explain is None else bool(explain)
        crits = self._criteria(criteria)
        results: list[Optional[Prediction]] = []
        pending: list[tuple[int, PredictItem]] = []
        for i, obj in enumerate(items):
            try:
                pending.append((i, to_item(obj, i)))
                results.append(None)
            except ItemError as e:
                results.append(Prediction(id=str(i), error=e.to_dict()))
        self.generated_tokens = []
        size = self.config.batch_size
        for start in range(0, len(pending), size):
            chunk = pending[start : start + size]
            ready: list[tuple[int, PredictItem, Any]] = []
            for i, item in chunk:
                try:
                    image = prepare_image(item, box_width, self.box_color, self.config.max_image_pixels)
                    ready.append((i, item, image))
                except ItemError as e:
                    results[i] = Prediction(id=str(item.id), error=e.to_dict())
            for (i, item, _), outcome in zip(ready, self._judge_apart(ready, crits, explain, use_adapters)):
                if isinstance(outcome, ItemError):
                    results[i] = Prediction(id=str(item.id), error=outcome.to_dict())
                else:
                    results[i] = Prediction(id=str(item.id), criteria=outcome)
            if progress:
                progress.advance(len(chunk))
        return [r for r in results if r is not None]

    def _judge_apart(self, ready: list[tuple[int, PredictItem, Any]], crits: list[Criterion], explain: bool,
                     use_adapters: bool) -> list:
        """:meth:`_judge` on ``ready`` (index, item, image) triples; when the batch fails, its two
        halves are judged apart, down to the item that fails alone (an ItemError
        ``prediction_failed`` naming it and the error). One bad item in a batch of n costs about
        2 log2(n) extra calls, not n; the others are judged as usual."""
        if not ready:
            return []
        try:
            return self._judge([img for _, _, img in ready], [it.object for _, it, _ in ready], crits, explain,
                               use_adapters)
        except Exception as e:
            if len(ready) == 1:
                return [ItemError("prediction_failed", f"item {ready[0][1].id}: the model failed on it: "
                                                       f"{type(e).__name__}: {e}")]
            mid = len(ready) // 2
            return (self._judge_apart(ready[:mid], crits, explain, use_adapters)
                    + self._judge_apart(ready[mid:], crits, explain, use_adapters))

    def _criteria(self, criteria: Optional[Sequence[str | Criterion]]) -> list[Criterion]:
        if criteria is None:
            return list(self.criteria)
        out = [c if isinstance(c, Criterion) else Criterion.parse(str(c)) for c in criteria]
        missing = [c.value for c in out if c not in self.criteria]
        if missing:
            raise ValueError(f"this predictor has no student for {', '.join(missing)}; loaded: "
                             f"{', '.join(c.value for c in self.criteria)}")
        return out

    def _judge(self, images: list, objects: list[str], crits: list[Criterion], explain: bool,
               use_adapters: bool) -> list[dict[Criterion, CriterionResult]]:
        out: list[dict[Criterion, CriterionResult]] = [{} for _ in images]
        with self._lock, self._torch.inference_mode(), self._adapters_enabled(use_adapters):
            vision = None
            pixels = BatchPixels()  # the batch's preprocessed images, filled by the first criterion
            for crit in crits:
                with self._adapter(crit, use_adapters):
                    if use_adapters and not self.answer_format(crit).has_fast_path:
                        rows = self._reason(crit, images, objects, pixels)
                    elif explain:
                        rows, _ = self._explain(crit, images, objects, pixels, use_adapters)
                    else:
                        rows, vision = self._decide(crit, images, objects, vision, pixels, use_adapters)
                for per_item, row in zip(out, rows):
                    per_item[crit] = row
        return out

    def student_chat(self, criterion: Criterion, use_adapters: bool = True) -> StudentChat:
        """How ``criterion`` is asked: as its student was trained (the packaged decision-first prompts
        for the baseline); ``use_adapters=False`` (the base under the students' prompts) reads the
        answer on the fast path, whatever the students answer in."""
        chat = self.chats.get(criterion) or StudentChat.packaged()
        return chat if use_adapters else chat.with_answer_format(AnswerFormat.DECISION_FIRST)

    def answer_format(self, criterion: Criterion) -> AnswerFormat:
        """The answer format of ``criterion``'s student (decision-first for the baseline)."""
        return self.student_chat(criterion).answer_format

    def without_fast_path(self, criteria: Optional[Sequence[str | Criterion]] = None) -> list[Criterion]:
        """Criteria whose students answer reasoning-first: they have no one-pass fast path, so
        :meth:`predict` generates and parses their answers even when not asked to explain."""
        return [c for c in self._criteria(criteria) if not self.answer_format(c).has_fast_path]

    def fast_path_note(self, criteria: Optional[Sequence[str | Criterion]] = None) -> Optional[str]:
        """One sentence naming the students without a fast path (None when all have one)."""
        return fast_path_note(self.students, self._criteria(criteria))

    # ---- the two paths ------------------------------------------------------------------

    def prompt_text(self, criterion: Criterion, object_name: str, decision: bool = False,
                    use_adapters: bool = True) -> str:
        """The chat-templated student prompt, ending with the assistant turn's opening (``decision``:
        with the forced decision prefix after it, the fast path's input)."""
        key = (criterion, object_name, decision, use_adapters)
        text = self._prompt_cache.get(key)
        if text is None:
            chat = self.student_chat(criterion, use_adapters)
            request = chat.request(criterion, object_name)
            text = chat.decision_prompt(self.processor, request) if decision else chat.prompt_text(self.processor, request)
            if len(self._prompt_cache) < 4096:
                self._prompt_cache[key] = text
        return text

    def _encode(self, texts: list[str], images: list, pixels: Optional[BatchPixels] = None) -> dict:
        """Processor inputs on the model's device, one image per text.

        ``pixels`` (one per batch, shared by its criteria) makes the image work happen once: the
        first call runs the processor and keeps its image tensors there; later calls only
        tokenise their texts (image placeholders expanded as the processor does) and reuse them.
        Image preprocessing is CPU work that would otherwise be repeated for every criterion.
        """
        if pixels is not None and pixels.tensors:
            return self._encode_texts(texts, pixels)
        inputs = self.processor(text=texts, images=images, padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        if pixels is not None:
            merge = self.processor.image_processor.merge_size ** 2
            pixels.tokens = [n // merge for n in inputs["image_grid_thw"].prod(-1).tolist()]
            pixels.type_ids = "mm_token_type_ids" in inputs
            pixels.tensors = {k: inputs[k] for k in ("pixel_values", "image_grid_thw")}
        return inputs

    def _encode_texts(self, texts: list[str], pixels: BatchPixels) -> dict:
        """Tokenised ``texts`` beside the batch's already preprocessed images (see :meth:`_encode`)."""
        token = self.processor.image_token
        if len(texts) != len(pixels.tokens):
            raise ValueError(f"{len(texts)} prompts for the {len(pixels.tokens)} images preprocessed for this batch")
        for i, t in enumerate(texts):
            if t.count(token) != 1:
                raise ValueError(f"prompt {i} holds {t.count(token)} image placeholders; reused images need exactly one")
        expanded = [t.replace(token, token * n) for t, n in zip(texts, pixels.tokens)]
        enc = self.tokenizer(expanded, padding=True, return_tensors="pt")
        inputs = {k: enc[k] for k in ("input_ids", "attention_mask")}
        if pixels.type_ids:
            inputs["mm_token_type_ids"] = self._torch.tensor(self.processor.create_mm_token_type_ids(enc["input_ids"]))
        return {**{k: v.to(self.device) for k, v in inputs.items()}, **pixels.tensors}

    def _decide(self, crit: Criterion, images: list, objects: list[str], vision=None,
                pixels: Optional[BatchPixels] = None, use_adapters: bool = True):
        """Fast path: one forward pass over prompt + 'Decision:'; returns rows and the vision
        features (reusable by the next criterion when shared)."""
        inputs = self._encode([self.prompt_text(crit, o, True, use_adapters) for o in objects], images, pixels)
        if self.share_vision:
            if vision is None:
                vision = self.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"], return_dict=True)
            inputs.pop("pixel_values")
            inputs["mm_encoder_outputs"] = {"image": vision}
        p_out, labels = decide(self.model, inputs, self.prefix_ids, self.decision_ids)
        rows = [CriterionResult(crit, lab, p if lab is Label.OUT else 1 - p, p, lab) for p, lab in zip(p_out, labels)]
        return rows, vision

    def generate(self, texts: list[str], images: list, max_new_tokens: int, first_logits: bool = False,
                 temperature: float = 0.0, top_p: float = 1.0, pixels: Optional[BatchPixels] = None,
                 stopping_criteria: Optional[list] = None, inputs: Optional[dict] = None):
        """Batched generation (left padding; greedy unless temperature > 0) for already
        templated ``texts`` and their images (flat, in order; None for text only). Returns (decoded new text, new-token counts,
        first-step logits or None). Call inside :meth:`use` to pick the adapter. ``pixels``: see
        :meth:`_encode`; ``inputs``: ``texts`` already encoded; ``stopping_criteria``: extra
        transformers stopping criteria (e.g. the server's, stopping rows whose client left)."""
        inputs = inputs if inputs is not None else self._encode(texts, images, pixels)
        out = generate_text(self.model, self.tokenizer, inputs, max_new_tokens, temperature=temperature,
                            top_p=top_p if temperature > 0 else None, stopping_criteria=stopping_criteria,
                            first_logits=first_logits)
        return out.texts, out.counts, out.first_logits

    def _explain(self, crit: Criterion, images: list, objects: list[str], pixels: Optional[BatchPixels] = None,
                 use_adapters: bool = True):
        fmt = self.student_chat(crit, use_adapters).answer_format
        if self.config.force_decision_prefix:
            texts, counts, first = self.generate([self.prompt_text(crit, o, True, use_adapters) for o in objects],
                                                 images, self.config.max_new_tokens, first_logits=True, pixels=pixels)
            answers = [fmt.complete(t) for t in texts]
            p_out, fast = two_way(first, self.decision_ids)
        else:
            fast_rows, _ = self._decide(crit, images, objects, pixels=pixels, use_adapters=use_adapters)
            p_out, fast = [r.p_out for r in fast_rows], [r.fast_label for r in fast_rows]
            answers, counts, _ = self.generate([self.prompt_text(crit, o, False, use_adapters) for o in objects],
                                               images, self.config.max_new_tokens, pixels=pixels)
        self.generated_tokens.extend(counts)
        rows = []
        for answer, p, fast_label in zip(answers, p_out, fast):
            parsed = parse_student_answer(answer, crit, fmt)
            # One decision per criterion: the logits'. The generated text's own label is kept
            # beside it (generated_label, agrees_with_fast) and its reading status says whether
            # the explanation could be read.
            prob = p if fast_label is Label.OUT else 1 - p
            rows.append(CriterionResult(crit, fast_label, prob, p, fast_label, parsed.analysis, answer.strip(),
                                        parsed.label, parsed.status))
        return rows, None

    def _reason(self, crit: Criterion, images: list, objects: list[str], pixels: Optional[BatchPixels] = None):
        """A reasoning-first student: generate the whole answer and read its ``Final decision:``
        line; an unreadable answer has no label (its status says why), never a guessed one."""
        answers, counts, _ = self.generate([self.prompt_text(crit, o) for o in objects], images,
                                           self.config.max_new_tokens, pixels=pixels)
        self.generated_tokens.extend(counts)
        rows = []
        fmt = self.answer_format(crit)
        for answer in answers:
            parsed = parse_student_answer(answer, crit, fmt)
            rows.append(CriterionResult(crit, parsed.label, None, None, None, parsed.analysis, answer.strip(),
                                        parsed.label, parsed.status))
        return rows

    def chat(self, messages: list[list[dict]], images: list, adapter: Optional[str | Criterion] = None,
             max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
             stopping_criteria: Optional[list] = None) -> tuple[list[str], list[int], list[int]]:
        """Free generation for chat requests (e.g. the OpenAI-compatible route): ``messages`` in the
        processor's chat format, one conversation per request; ``images`` all their images, flat, in
        the order their image parts appear (None for text only). Answered by the adapter named
        ``adapter`` (a criterion) or by the base when None. Returns (texts, new-token counts,
        prompt-token counts)."""
        crit = None if adapter is None else (adapter if isinstance(adapter, Criterion) else Criterion.parse(str(adapter)))
        texts = [self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        with self._lock, self._torch.inference_mode(), self._adapters_enabled(crit is not None):
            with self._adapter(crit, crit is not None):
                inputs = self._encode(texts, images)
                out, counts, _ = self.generate(texts, images, max_new_tokens, temperature=temperature, top_p=top_p,
                                               stopping_criteria=stopping_criteria, inputs=inputs)
        return out, counts, [int(n) for n in inputs["attention_mask"].sum(-1).tolist()]

    @contextlib.contextmanager
    def use(self, criterion: Optional[Criterion]):
        """Hold the model with ``criterion``'s adapter active (None: the base without adapters)."""
        with self._lock, self._torch.inference_mode(), self._adapters_enabled(criterion is not None):
            with self._adapter(criterion, criterion is not None):
                yield self

    # ---- adapters -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _adapter(self, crit: Optional[Criterion], use_adapters: bool):
        if self.peft_model is not None and use_adapters and crit is not None:
            if crit not in self.adapters:
                raise ValueError(f"no adapter for {crit.value}")
            self.peft_model.set_adapter(self.adapters[crit])
        yield

    def _adapters_enabled(self, use_adapters: bool):
        if self.peft_model is not None and not use_adapters:
            return self.peft_model.disable_adapter()
        return contextlib.nullcontext()

    def _adapters_touch_vision(self) -> bool:
        if self.peft_model is None:
            return False
        from peft.tuners.lora import LoraLayer

        return any(isinstance(m, LoraLayer) and ".visual." in f".{name}." for name, m in self.model.named_modules())


def drawn_box(config: PredictConfig, students: Iterable[StudentInfo]) -> tuple[Optional[int], tuple[int, int, int], str]:
    """The box drawn on items that are not boxed yet: ``(width, colour, from)``. A setting given
    (``predict.box_width``, ``predict.box_color``) wins; what it leaves null is taken from the box
    the students were trained on (their ``box_style``), else the defaults (width by the image's size,
    red). ``from`` says which: ``settings``, ``students``, ``defaults`` or a mix joined by ``+``."""
    trained = trained_box_style(students)

    def pick(given, learnt, default):
        if given is not None:
            return given, "settings"
        return (learnt, "students") if trained is not None else (default, "defaults")

    width, width_from = pick(config.box_width, trained and trained.width, None)
    color, color_from = pick(config.box_color, trained and trained.color, BOX_RED)
    return width, tuple(color), "+".join(dict.fromkeys((width_from, color_from)))


def _load_base(base_ref: str, cfg: PredictConfig, device: str, given: bool):
    """The students' base model; a base that does not load is a StudentError naming it and
    where it came from (never an OSError a server would take for its socket)."""
    try:
        return load_model(base_ref, dtype=cfg.dtype, device=device, attn_implementation=cfg.attn_implementation)
    except OSError as e:
        source = "given as --base (Python: base=)" if given else "found from the students' record"
        raise StudentError(f"cannot load the base model {base_ref} ({source}): {e}; "
                           "pass --base FOLDER_OR_HUB_ID") from e


def _merge_config(config: Optional[PredictConfig], device: Optional[str], dtype: str, batch_size: int,
                  criteria: Optional[Sequence[str | Criterion]]) -> PredictConfig:
    """A config given as a whole wins for dtype and batch size; device and criteria arguments
    narrow it when passed."""
    cfg = config.model_copy() if config is not None else PredictConfig(dtype=dtype, batch_size=batch_size)
    if device:
        cfg.device = device
    if criteria is not None:
        cfg.criteria = [Criterion.parse(str(getattr(c, "value", c))).value for c in criteria]
    return cfg


@contextlib.contextmanager
def _adapter_load(info: StudentInfo):
    """A student whose adapter cannot be loaded (damaged weights, shapes of another base) is a
    StudentError naming its folder and the reason, not a library traceback."""
    try:
        yield
    except StudentError:
        raise
    except Exception as e:  # safetensors' SafetensorError is a bare Exception
        raise StudentError(f"{info.path}: the {info.criterion.value} adapter cannot be loaded: "
                           f"{type(e).__name__}: {e}") from None


def _processor_source(student_dir: Path, base: str) -> str:
    """The processor saved beside the adapter (what training used), else the base's."""
    if any((student_dir / f).is_file() for f in ("preprocessor_config.json", "processor_config.json", "tokenizer.json")):
        return str(student_dir)
    return base
