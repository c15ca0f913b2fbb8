"""Where a Predictor's time goes: image preprocessing, vision tower, prefill, decode, the rest.

    with StageClock(predictor) as clock:
        predictor.predict(items, explain=True)
    clock.seconds   # {"preprocess": .., "vision_tower": .., "prefill": .., "decode": .., "other": .., "total": ..}

Method: wall-clock timers around the model's own parts, nothing re-run, every stage measured in
the same calls:

- **preprocess**: the box drawing of each item (``prepare_image``) and the processor's work
  (``Predictor._encode``: image resize/normalise/patchify and tokenising; later criteria of a batch
  only tokenise) — timed by wrapping those two functions;
- **vision tower**: forward hooks (pre and post) on the model's vision tower (``model.visual``),
  whether it runs inside a forward pass or on its own for the shared fast path;
- **prefill**: every forward pass of the whole model over more than one new position (the fast
  path's one pass per criterion, ``generate``'s first step), minus the tower time inside it;
- **decode**: every forward pass over one new position (``generate``'s later steps);
- **other**: the rest of the wall time (generate's bookkeeping, stopping checks, decoding the text,
  parsing the answers, adapter switching, Python).

On a GPU each hook synchronises the device first (``sync=True``), so a stage's time is its kernels'
and not the launch of the next stage's; this costs a little throughput, so images/s are measured
without the clock.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

STAGES = ("preprocess", "vision_tower", "prefill", "decode", "other")


class StageClock:
    """A context manager that times one Predictor's stages (see the module docstring)."""

    def __init__(self, predictor, sync: bool = False):
        self.predictor = predictor
        self.sync = sync
        self.seconds = {s: 0.0 for s in STAGES}
        self.calls = {"prefill": 0, "decode": 0, "vision_tower": 0}
        self._stack = ExitStack()
        self._vision_acc = 0.0
        self._open: list[tuple[float, float, bool]] = []

    def _now(self) -> float:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def _wrap(self, owner, attr: str, stage: str) -> None:
        original = getattr(owner, attr)

        def timed(*a, **k):
            t0 = self._now()
            try:
                return original(*a, **k)
            finally:
                self.seconds[stage] += self._now() - t0

        setattr(owner, attr, timed)
        self._stack.callback(setattr, owner, attr, original)

    def __enter__(self) -> "StageClock":
        import scenefit.predict.predictor as predictor_module

        model = self.predictor.model
        vision = model.model.visual
        self._wrap(predictor_module, "prepare_image", "preprocess")
        self._wrap(self.predictor, "_encode", "preprocess")
        vision_t0: list[float] = []

        def vision_pre(module, args):
            vision_t0.append(self._now())

        def vision_post(module, args, output):
            dt = self._now() - vision_t0.pop()
            self.seconds["vision_tower"] += dt
            self._vision_acc += dt
            self.calls["vision_tower"] += 1

        def model_pre(module, args, kwargs):
            ids = kwargs.get("input_ids")
            if ids is None:
                ids = kwargs.get("inputs_embeds")
            one = ids is not None and ids.shape[1] == 1  # a step over one new position (the cache holds the rest)
            self._open.append((self._now(), self._vision_acc, one))

        def model_post(module, args, kwargs, output):
            t0, vision_before, one = self._open.pop()
            stage = "decode" if one else "prefill"
            self.seconds[stage] += self._now() - t0 - (self._vision_acc - vision_before)
            self.calls[stage] += 1

        for handle in (vision.register_forward_pre_hook(vision_pre), vision.register_forward_hook(vision_post),
                       model.register_forward_pre_hook(model_pre, with_kwargs=True),
                       model.register_forward_hook(model_post, with_kwargs=True)):
            self._stack.callback(handle.remove)
        self._t0 = self._now()
        return self

    def __exit__(self, *exc) -> None:
        total = self._now() - self._t0
        self._stack.close()
        self.seconds["other"] = max(0.0, total - sum(self.seconds[s] for s in STAGES if s != "other"))
        self.seconds["total"] = total

    def per_image(self, images: int) -> dict[str, float]:
        return {k: v / images for k, v in self.seconds.items()}

    def shares(self) -> dict[str, float]:
        total = self.seconds.get("total") or 1.0
        return {s: self.seconds[s] / total for s in STAGES}


def breakdown_table(rows: dict[str, dict[str, float]]) -> str:
    """A text table: one row per label (its per-image seconds by stage, with "total"), each stage
    in milliseconds with its share of the total, and the dominant stage."""
    out = [f"{'path':12s}" + "".join(f"{s:>20s}" for s in STAGES) + f"{'total':>11s}  dominant"]
    for label, sec in rows.items():
        total = sec["total"] or 1.0
        cells = "".join(f"{f'{1000 * sec[s]:.1f} ms ({100 * sec[s] / total:.0f} %)':>20s}" for s in STAGES)
        out.append(f"{label:12s}{cells}{1000 * sec['total']:8.1f} ms  {max(STAGES, key=lambda s: sec[s])}")
    return "\n".join(out)
