"""``scenefit predict --engine ray``: the students over a large manifest, on a pool of Ray actors.

    scenefit predict --students S --manifest M --out preds.parquet --engine ray --actors 4 --gpus-per-actor 1
    scenefit predict --students S --manifest M --out preds.parquet --engine ray --address auto   # a running cluster

    from scenefit.predict.ray_engine import RaySettings, predict_on_ray
    rows = predict_on_ray(items, cfg, Path("preds.parquet"), RaySettings(actors=2), synthetic=False)

The driver reads the manifest with the same reader as in process (so every unreadable row is the
same error row) and hands the items to Ray Data, one block per shard (:mod:`scenefit.predict.shards`).
A pool of ``actors`` actors (``cpus_per_actor`` / ``gpus_per_actor`` each) loads one base and the
three adapters once per actor and runs :meth:`~scenefit.predict.Predictor.predict` — the predictor's
own batched path, ``batch_size`` items at a time — and returns each item's output row. The rows
stream back to the driver, the one writer: it commits each shard when its last row arrives, shows
progress on stderr, and when all shards are in writes the output file atomically. A killed run
resumes with the shards it had not committed. The actors need the students, the base and the
images at the same paths as the driver (a shared filesystem, or the same copy on every node).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from scenefit.core.progress import Progress
from scenefit.predict.config import PredictConfig
from scenefit.predict.items import PredictItem, to_item
from scenefit.predict.shards import ShardPlan, fingerprint

#: The predict settings that do not change an answer (left out of the shards' fingerprint).
_RUN_ONLY = {"engine", "ray_address", "ray_actors", "ray_cpus_per_actor", "ray_gpus_per_actor", "shard_size", "device"}


@dataclass(frozen=True)
class RaySettings:
    """Where and on how many actors the items are judged."""

    address: Optional[str] = None  # None: the Ray this process joined, else a new local one
    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    shard_size: int = 512

    @classmethod
    def from_config(cls, cfg: PredictConfig) -> "RaySettings":
        return cls(cfg.ray_address, cfg.ray_actors, cfg.ray_cpus_per_actor, cfg.ray_gpus_per_actor, cfg.shard_size)


def item_record(item: Any, index: int) -> dict:
    """An item as the JSON the actors receive (id, image path, object, box, boxed)."""
    it = to_item(item, index)
    if not isinstance(it.image, (str, Path)):
        raise ValueError(f"item {it.id}: the Ray engine takes image paths, not in-memory images")
    return {"id": str(it.id), "image": str(it.image), "object": it.object,
            "box": None if it.box is None else [float(v) for v in it.box], "boxed": bool(it.boxed)}


class PredictActor:
    """One Ray actor: a Predictor loaded once, judging batches of items into output rows."""

    def __init__(self, cfg_json: str, baseline: bool, synthetic: bool, cwd: Optional[str] = None):
        import os

        from scenefit.predict.predictor import Predictor

        if cwd and os.path.isdir(cwd):  # relative paths (images, base) mean what they meant to the driver
            os.chdir(cwd)
        cfg = PredictConfig.model_validate_json(cfg_json)
        self.predictor = Predictor.baseline(cfg.base, config=cfg) if baseline else Predictor.from_students(cfg.students, config=cfg)
        self.synthetic = synthetic

    def __call__(self, batch: dict) -> dict:
        from scenefit.predict.output import prediction_rows

        records = [json.loads(s) for s in batch["item"]]
        items = [PredictItem(r["image"], r["object"], None if r["box"] is None else tuple(r["box"]), r["boxed"], r["id"])
                 for r in records]
        rows = prediction_rows(items, self.predictor.predict(items), self.synthetic)
        return {"index": batch["index"], "row": [json.dumps(r) for r in rows]}


def run_key(records: Sequence[dict], cfg: PredictConfig, baseline: bool, shard_size: int) -> str:
    """What makes two runs' shards interchangeable: the same items, settings and shard size."""
    return fingerprint(records, cfg.model_dump(mode="json", exclude=_RUN_ONLY), baseline, shard_size)


def predict_on_ray(items: Sequence[Any], cfg: PredictConfig, out: Path, settings: RaySettings, *, baseline: bool = False,
                   synthetic: bool = False, progress: Optional[Progress] = None) -> list[dict]:
    """Judge ``items`` on Ray and return their output rows in input order (the shards are kept
    beside ``out`` until the caller has written it and called
    :func:`scenefit.predict.shards.remove_parts`). ``cfg`` names the students (or, with
    ``baseline``, the base) as every node can read them. ``progress`` gets a bar over the items
    still to judge (with ``resumed=N``, the items an earlier run committed) and advances as rows arrive."""
    records = [item_record(it, i) for i, it in enumerate(items)]
    plan = ShardPlan.open(out, len(records), settings.shard_size, run_key(records, cfg, baseline, settings.shard_size))
    pending = plan.pending()
    todo = sum(len(plan.indices(k)) for k in pending)
    if progress is not None:
        progress.bar(f"predict on ray ({settings.actors} actor(s))", todo)
        if todo < len(records):
            progress.note(resumed=len(records) - todo)
    if pending:
        _run_shards(plan, pending, records, cfg, settings, baseline, synthetic, progress)
    return list(plan.rows())


def _run_shards(plan: ShardPlan, pending: list[int], records: list[dict], cfg: PredictConfig, settings: RaySettings,
                baseline: bool, synthetic: bool, progress: Optional[Progress]) -> None:
    import os

    import pyarrow as pa

    from scenefit.core.ray_session import join_ray

    ray = join_ray(settings.address, feature="scenefit predict --engine ray")
    blocks = [pa.table({"index": list(plan.indices(k)), "item": [json.dumps(records[i]) for i in plan.indices(k)]})
              for k in pending]
    ds = ray.data.from_arrow(blocks).map_batches(
        PredictActor,
        fn_constructor_kwargs={"cfg_json": cfg.model_dump_json(), "baseline": baseline, "synthetic": synthetic,
                               "cwd": os.getcwd()},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        num_cpus=settings.cpus_per_actor,
        num_gpus=settings.gpus_per_actor or None,
    )
    waiting: dict[int, dict[int, dict]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for index, row in zip(batch["index"].tolist(), batch["row"]):
            shard = plan.shard_of(index)
            got = waiting.setdefault(shard, {})
            got[index] = json.loads(row)
            if len(got) == len(plan.indices(shard)):
                plan.write(shard, [got[i] for i in plan.indices(shard)])
                del waiting[shard]
        if progress is not None:
            progress.advance(len(batch["index"]))
    if waiting:
        raise RuntimeError(f"Ray returned incomplete shards {sorted(waiting)}; run again to redo them")
