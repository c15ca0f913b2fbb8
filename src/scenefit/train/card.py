"""The model card (README.md with YAML front matter) written beside each student adapter."""

from __future__ import annotations

from typing import Any

import yaml

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import Criterion
from scenefit.core.images import BoxStyle
from scenefit.student.metadata import StudentMeta, loadable_base
from scenefit.train.config import TrainConfig


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def model_card(meta: StudentMeta, metrics: dict[str, Any], cfg: TrainConfig) -> str:
    info = meta.model_dump(mode="json")
    crit = Criterion(info["criterion"])
    tags = ["scenefit", "lora", "peft", "vision-language", "out-of-context", crit.value]
    if info["synthetic"]:
        tags.append("synthetic")
    test = metrics.get("test") or {}
    model_index_metrics = []
    if test.get("student", {}).get("accuracy") is not None:
        model_index_metrics.append({"type": "accuracy", "name": "decision accuracy vs dataset labels (test)",
                                    "value": round(test["student"]["accuracy"], 4)})
    if test.get("student", {}).get("accuracy_vs_truth") is not None:
        model_index_metrics.append({"type": "accuracy", "name": "decision accuracy vs truth (test)",
                                    "value": round(test["student"]["accuracy_vs_truth"], 4)})
    front: dict[str, Any] = {
        # the hub reads base_model as a hub id: a local folder's name is no such id, so it is left out
        **({} if meta.base_model_path else {"base_model": info["base_model"]}),
        "library_name": "peft",
        "pipeline_tag": "image-text-to-text",
        "tags": tags,
        "metrics": ["accuracy"],
    }
    if model_index_metrics:
        front["model-index"] = [{
            "name": f"scenefit-{crit.value}",
            # The hub's model-index schema requires a dataset per result (huggingface_hub refuses to
            # load a card without one, and PEFT loads the card when it saves an adapter beside it).
            "results": [{
                "task": {"type": "image-text-to-text"},
                "dataset": {"type": f"scenefit-{crit.value}", "name": f"scenefit {crit.display} student dataset",
                            "split": "test"},
                "metrics": model_index_metrics,
            }],
        }]
    lo = info["lora"]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# scenefit student: {crit.display}", ""]
    if info["synthetic"]:
        lines += [f"> **{SYNTHETIC_NOTICE}**", ""]
    lines += [
        f"Question: {crit.question}",
        "",
        f"A LoRA adapter on {_base_words(meta)} that answers one criterion for an image whose object is marked "
        f"with a red box: {_answer_shape(meta, crit)}. Prompt version `{info['prompt_version']}` (the prompt, as "
        f"trained, is in `scenefit_student.json`); the user turn is {meta.chat.describe_layout()} "
        f"(send it in that order, e.g. to vLLM), after "
        + (f"the system turn `{meta.chat.system}`." if meta.chat.system else "no system turn of its own (the chat "
           "template's default one)."),
        "",
        "## Adapter",
        "",
        f"- LoRA r={lo['r']}, alpha={lo['alpha']}, dropout={lo['dropout']} on {len(lo['targets'])} language-model "
        f"projections (regex `{lo['target_regex']}`); the vision tower is frozen and not adapted.",
    ]
    if lo["modules_to_save"]:
        lines.append(f"- Fully trained modules saved with the adapter: {lo['modules_to_save']}. {info['vllm_note']}")
    else:
        lines.append("- Language-model LoRA only: servable with vLLM `--enable-lora --lora-modules`.")
    lines += [
        "",
        "## Training",
        "",
        f"- lr {cfg.learning_rate}, warm-up {cfg.warmup_ratio}, schedule {cfg.lr_scheduler}, optimizer {cfg.optimizer}, "
        f"effective batch {metrics.get('effective_batch_size')}, precision {cfg.precision}, seed {cfg.seed}.",
        f"- {metrics.get('global_step')} optimizer steps ({metrics.get('epoch') or 0:.2f} epochs) on "
        f"{metrics.get('train_rows')} rows; best checkpoint by `{cfg.metric_for_best_model}` = "
        f"{metrics.get('best_metric', {}).get('value')}.",
        "- Loss on the assistant answer only; images never truncated"
        + (f" (answers cut to {cfg.max_seq_length} tokens where longer, never before their decision)."
           if cfg.truncation else "."),
        f"- The red boxes it was trained on: {BoxStyle.words(meta.box_style)}"
        + ("; `scenefit predict` and `serve` draw theirs so unless `predict.box_width`/`box_color` say otherwise."
           if meta.box_style else "."),
        "",
    ]
    distill = metrics.get("distill")
    if distill:  # soft labels: say what the decision token learnt from
        rows = distill["rows"].get("train", {})
        lines[-1:-1] = [
            f"- Soft labels: + {distill['weight']} x KL(teacher || student) over {{In, Out}} at the decision token, "
            f"target `{distill['column']}`, temperature {distill['temperature']}"
            + ("" if distill.get("hard_decision", True) else ", decision token out of the cross-entropy")
            + f"; {rows.get('with_target')} training rows with a target, {rows.get('skipped_null')} without (CE only). "
            "`eval_loss` is the answer's cross-entropy alone (the term is `eval_distill_kl`).",
        ]
    if test:
        s, b = test.get("student", {}), test.get("base", {})
        lines += [
            "## Test split (decision scored " + ("from the logits after the forced prefix)" if meta.answer_format.has_fast_path
                                                  else "from the generated Final decision: line)"),
            "",
            "| model | accuracy vs labels | accuracy vs truth |",
            "|---|---:|---:|",
            f"| student | {_pct(s.get('accuracy'))} | {_pct(s.get('accuracy_vs_truth'))} |",
            f"| untrained base | {_pct(b.get('accuracy'))} | {_pct(b.get('accuracy_vs_truth'))} |",
            "",
            f"{test.get('n')} test rows.",
            "",
        ]
    lines += [
        "## Use",
        "",
        "With plain transformers and PEFT (no scenefit, no torchvision), run inside this folder: the base named "
        f"in `adapter_config.json` (`{loadable_base(info)}`; where it is not, pass its place to "
        "`from_pretrained` yourself), the adapter on it, the processor saved here, then one "
        + ("decision from the logits after the forced answer prefix, as `scenefit predict` decides it."
           if meta.answer_format.has_fast_path else "answer is generated and its `Final decision:` line read."),
        "",
        "```python",
        usage_snippet(meta),
        "```",
        "",
        "`scenefit predict --students PARENT_FOLDER` and `scenefit serve` use the three students together.",
        "",
    ]
    return "\n".join(lines)


def usage_snippet(meta: StudentMeta) -> str:
    """The card's Python: load the student with PEFT and its processor with AutoProcessor, judge
    one image. Tests run it exactly as written (tests/e2e/test_student_card.py)."""
    crit = Criterion(meta.criterion)
    chat = meta.chat  # asked as it was trained
    text, image = '{"type": "text", "text": PROMPT.replace("{object}", obj)}', '{"type": "image"}'
    content = "[" + ", ".join([text, image] if chat.image_position == "after_text" else [image, text]) + "]"
    system = ('[{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},' if chat.system else
              "[  # no system turn of its own: the chat template adds its default one")
    head = [
        "import torch",
        "from peft import PeftConfig, PeftModel",
        "from PIL import Image, ImageDraw",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        'student = "."  # this folder',
        "base = AutoModelForImageTextToText.from_pretrained(PeftConfig.from_pretrained(student).base_model_name_or_path)",
        "model = PeftModel.from_pretrained(base, student).eval()",
        "processor = AutoProcessor.from_pretrained(student)",
        "",
        "image = Image.new(\"RGB\", (448, 336), (120, 180, 240))  # your photo: Image.open(\"photo.jpg\").convert(\"RGB\")",
        "ImageDraw.Draw(image).rectangle((150, 120, 290, 300), outline=(255, 0, 0), width=3)  # the object's red box",
        'obj = "cow"',
        *([f"SYSTEM = {chat.system!r}"] if chat.system else []),
        f"PROMPT = {chat.prompts[crit.value]!r}",
        f"messages = {system}",
        f'            {{"role": "user", "content": {content}}}]',
        "text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
    ]
    if meta.answer_format.has_fast_path:
        body = [
            f"inputs = processor(text=[text + {meta.decision_prefix!r}], images=[image], return_tensors=\"pt\")",
            "with torch.no_grad():",
            "    logits = model(**inputs).logits[0, -1]",
            "first = [processor.tokenizer(\" \" + label).input_ids[0] for label in (\"In-context\", \"Out-of-context\")]",
            "p_out = logits[first].float().softmax(-1)[1].item()",
            'label = "Out-of-context" if p_out > 0.5 else "In-context"',
            f'print("{crit.value}:", label, f"P(Out-of-context) = {{p_out:.3f}}")',
        ]
    else:
        body = [
            "inputs = processor(text=[text], images=[image], return_tensors=\"pt\")",
            "with torch.no_grad():",
            "    out = model.generate(**inputs, max_new_tokens=128, do_sample=False)",
            "answer = processor.decode(out[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True)",
            f"last = answer.split({meta.decision_prefix!r})[-1].strip()",
            'label = next((x for x in ("Out-of-context", "In-context") if last.startswith(x)), None)  # None: unreadable',
            f'print("{crit.value}:", label, "|", answer)',
        ]
    return "\n".join(head + body)


def _answer_shape(meta: StudentMeta, crit: Criterion) -> str:
    if meta.answer_format.has_fast_path:
        return (f"first `{meta.decision_prefix} In-context|Out-of-context`, then one `{crit.display}: …` sentence "
                "(answer format decision_first: the decision can be scored in one forward pass)")
    return (f"`Analysis:` with one `{crit.display}: …` sentence, a blank line, `Summary:`, then "
            f"`{meta.decision_prefix} In-context|Out-of-context` last (answer format reasoning_first: the "
            "decision is read from the generated text)")


def _base_words(meta: StudentMeta) -> str:
    """The base as the card names it: the hub id, or the folder it was trained from (a moved run
    finds it again at the same place relative to the students folder)."""
    if not meta.base_model_path:
        return f"`{meta.base_model}`"
    return (f"the local base `{meta.base_model}` (trained from `{meta.base_model_path}`; from the students folder "
            f"`{meta.base_model_relative}`)")
