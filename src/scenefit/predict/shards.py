"""Shards of a long predict run, committed one file each, so that a killed run resumes.

    scenefit predict --students S --manifest M --out preds.parquet --engine ray   # kill it, run it again

The items are cut, in input order, into shards of ``shard_size``. Beside the output ``P`` a folder
``P.parts/`` holds ``plan.json`` (item count, shard size and a fingerprint of the items and the
settings that decide the answers) and one ``shard-NNNNNN.jsonl`` per finished shard, written
atomically through :func:`scenefit.core.files.atomic_write_text` by the one writer (the
driver). A kill at any moment leaves each shard either complete or absent (a ``.tmp`` left
behind is never read), so a rerun redoes only the missing shards and no row is lost or written
twice. When every shard is there the rows are read back in input order, ``P`` is written
atomically, and only then the folder is removed. A folder whose plan does not match this run
(other items, shard size or settings) is stale: it is replaced, and the run starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from scenefit.core.files import atomic_write_text, write_json

PLAN = "plan.json"


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (the items and the settings of a run)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


@dataclass
class ShardPlan:
    """The shards of one run: ``n_items`` items in shards of ``shard_size``, kept in ``folder``."""

    folder: Path
    n_items: int
    shard_size: int
    key: str
    stale: bool = False  # an earlier folder of another run was replaced

    @classmethod
    def open(cls, out: Path, n_items: int, shard_size: int, key: str) -> "ShardPlan":
        """The plan beside ``out``: the folder's own when it matches, else a fresh one."""
        folder = parts_folder(out)
        want = {"items": n_items, "shard_size": shard_size, "key": key}
        stale = False
        if folder.exists():
            try:
                have = json.loads((folder / PLAN).read_text())
            except (OSError, ValueError):
                have = None
            if have == want:
                return cls(folder, n_items, shard_size, key)
            shutil.rmtree(folder)
            stale = True
        folder.mkdir(parents=True)
        write_json(want, folder / PLAN)
        return cls(folder, n_items, shard_size, key, stale)

    @property
    def n_shards(self) -> int:
        return -(-self.n_items // self.shard_size)

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    def indices(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.n_items, (shard + 1) * self.shard_size))

    def path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:06d}.jsonl"

    def done(self) -> set[int]:
        """Shards whose file is complete (written by an atomic rename)."""
        return {k for k in range(self.n_shards) if self.path(k).is_file()}

    def pending(self) -> list[int]:
        done = self.done()
        return [k for k in range(self.n_shards) if k not in done]

    def write(self, shard: int, rows: list[dict]) -> None:
        """Commit one finished shard (its rows in input order)."""
        if len(rows) != len(self.indices(shard)):
            raise ValueError(f"shard {shard}: {len(rows)} rows for {len(self.indices(shard))} items")
        atomic_write_text("".join(json.dumps(r) + "\n" for r in rows), self.path(shard))

    def rows(self) -> Iterator[dict]:
        """Every row, in input order (all shards must be done)."""
        for k in range(self.n_shards):
            with self.path(k).open(encoding="utf-8") as f:
                for line in f:
                    yield json.loads(line)


def remove_parts(out: Path) -> None:
    """Drop the shards of ``out`` (call after ``out`` itself is written)."""
    shutil.rmtree(parts_folder(out), ignore_errors=True)


def parts_folder(out: Path) -> Path:
    """Where the shards of the output ``out`` are kept while a run is unfinished."""
    return out.with_name(out.name + ".parts")
