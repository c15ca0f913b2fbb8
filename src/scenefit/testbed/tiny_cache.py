"""The tiny model built once per configuration and code, then reused: a cache of model folders.

    scenefit tiny-model runs/demo/model --config demo              # reuses a cached build
    scenefit tiny-model runs/demo/model --config demo --no-cache   # always builds

    from scenefit.testbed.tiny_cache import cached_tiny_model
    out, how = cached_tiny_model("runs/demo/model", cfg)        # how: "built" | "reused" | "uncached"

The demo's base takes minutes of pretraining on two cores and comes out the same every time for
the same configuration, code and machine arithmetic, so it is built once and copied after. An
entry is ``CACHE/tiny-models/KEY/``: the model folder plus ``cache-entry.json`` (the key, what
went into it, and the SHA-256 of every file), written last.

- **Keyed** on everything the folder depends on: the whole configuration, the bytes of every
  source and data file of the installed ``scenefit`` package (any edit is a new key), the versions
  of the libraries that compute it, Python's, and torch's CPU capability (AVX2 and AVX-512
  machines compute different pretrained weights: docs/demo-results.md).
- **Atomic**: built into a temporary folder inside the cache and renamed into place whole, so a
  kill leaves no entry or a complete one; two builders racing keep the first entry.
- **Verified**: each reuse checks every file's SHA-256 against the entry; an entry that does not
  match (edited, truncated, missing a file) is dropped and the model rebuilt.
- The copy into OUT writes ``scenefit_tiny.json`` last, so a folder holding it is complete.

The cache folder is ``$SCENEFIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/scenefit``, else
``~/.cache/scenefit``; the newest :data:`KEEP_ENTRIES` entries are kept. Where it cannot be
written the model is built straight into OUT ("uncached"). SYNTHETIC: a test-bed device.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Optional

from scenefit.core.files import atomic_path, file_sha256, write_json

if TYPE_CHECKING:
    from scenefit.core.progress import Progress
    from scenefit.testbed.tiny_model import TinyModelConfig

#: Format of cache-entry.json and of the key's inputs (bumped when either changes).
CACHE_FORMAT = 1
#: Newest entries kept; older ones are removed after each build.
KEEP_ENTRIES = 6
ENTRY_FILE = "cache-entry.json"
#: Written last into OUT: its presence marks a complete model folder.
LAST_FILE = "scenefit_tiny.json"
#: Libraries whose arithmetic or file formats shape the folder.
LIBRARIES = ("torch", "transformers", "tokenizers", "numpy", "pillow", "safetensors")
#: Package files that are code or data (prompts, the chat template); the packaged configs are
#: inputs, not code: what a build reads of them is in the key as the configuration.
_SOURCE_SUFFIXES = (".py", ".json", ".txt", ".jinja")
#: Leftovers of killed builds older than this are removed when the cache is pruned.
STALE_SECONDS = 24 * 3600

How = Literal["built", "reused", "uncached"]


def cache_root() -> Path:
    """``$SCENEFIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/scenefit``, else ``~/.cache/scenefit``."""
    if os.environ.get("SCENEFIT_CACHE_DIR"):
        return Path(os.environ["SCENEFIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "scenefit"


def code_digest() -> str:
    """SHA-256 over the relative path and bytes of every source and data file of the installed
    ``scenefit`` package: the code version, whether installed from a wheel or editable."""
    import scenefit

    root = Path(scenefit.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _SOURCE_SUFFIXES
                       and not {"__pycache__", "configs"} & set(p.relative_to(root).parts)):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def key_inputs(cfg: TinyModelConfig) -> dict:
    """Everything the key is made of (kept in the entry, so a reader can see why two keys differ)."""
    import torch

    return {
        "format": CACHE_FORMAT,
        "config": cfg.model_dump(mode="json"),
        "code": code_digest(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "python": ".".join(map(str, sys.version_info[:3])),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != ENTRY_FILE)


def verify_entry(entry: Path, key: str) -> Optional[str]:
    """None when ``entry`` is complete and every file matches its recorded SHA-256; else what is wrong."""
    try:
        record = json.loads((entry / ENTRY_FILE).read_text())
    except (OSError, ValueError) as e:
        return f"no readable {ENTRY_FILE} ({type(e).__name__})"
    if record.get("key") != key:
        return f"its key {record.get('key')!r} is not {key!r}"
    files = record.get("files") or {}
    if LAST_FILE not in files:
        return f"{LAST_FILE} is not listed"
    present = {p.name for p in _files(entry)}
    if present != set(files):
        return f"files differ from the record (extra {sorted(present - set(files))}, missing {sorted(set(files) - present)})"
    for name, digest in files.items():
        if file_sha256(entry / name) != digest:
            return f"{name} does not match its SHA-256"
    return None


def _discard(entry: Path) -> None:
    """Move ``entry`` out of the way (atomically), then delete it."""
    trash = entry.with_name(f".trash-{entry.name}-{os.getpid()}")
    try:
        os.replace(entry, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def copy_model(src: Path, out: Path) -> Path:
    """Copy a model folder's files into ``out``, each through a temporary name, ``scenefit_tiny.json`` last."""
    out.mkdir(parents=True, exist_ok=True)
    files = _files(src)
    for path in sorted(files, key=lambda p: p.name == LAST_FILE):
        with atomic_path(out / path.name) as tmp:
            shutil.copyfile(path, tmp)
    return out


def _prune(models: Path, keep: int = KEEP_ENTRIES) -> None:
    """Keep the ``keep`` most recently used entries; remove killed builds' leftovers past a day."""
    import time

    folders = [p for p in models.iterdir() if p.is_dir()]
    entries = sorted((p for p in folders if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        _discard(old)
    for left in (p for p in folders if p.name.startswith(".") and time.time() - p.stat().st_mtime > STALE_SECONDS):
        shutil.rmtree(left, ignore_errors=True)


def cached_tiny_model(out_dir: str | Path, cfg: TinyModelConfig, progress: Optional[Progress] = None,
                      cache_dir: Optional[str | Path] = None, log=None) -> tuple[Path, How]:
    """The tiny model of ``cfg`` in ``out_dir``: copied from a verified cache entry when there is
    one ("reused"), else built into the cache and copied ("built"); built straight into
    ``out_dir`` when the cache folder cannot be written ("uncached"). ``log`` (a callable taking a
    line) hears about dropped entries and an unwritable cache."""
    from scenefit.testbed.tiny_model import build_tiny_model

    say = log or (lambda line: None)
    out = Path(out_dir)
    inputs = key_inputs(cfg)
    key = cache_key(inputs)
    models = Path(cache_dir).expanduser() if cache_dir else cache_root()
    models = models / "tiny-models"
    entry = models / key
    if entry.is_dir():
        problem = verify_entry(entry, key)
        if problem is None:
            os.utime(entry)  # most recently used: kept by the pruning
            return copy_model(entry, out), "reused"
        say(f"cache entry {entry} dropped: {problem}")
        _discard(entry)
    try:
        models.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=models))
    except OSError as e:
        say(f"cache folder {models} not writable ({e}); building without the cache")
        return build_tiny_model(out, cfg, progress=progress), "uncached"
    try:
        build_tiny_model(staging, cfg, progress=progress)
        record = {"key": key, "inputs": inputs, "files": {p.name: file_sha256(p) for p in _files(staging)}}
        write_json(record, staging / ENTRY_FILE)
        try:
            os.rename(staging, entry)  # atomic; fails when another builder's entry got there first
        except OSError:
            if verify_entry(entry, key) is not None:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    _prune(models)
    return copy_model(entry, out), "built"
