"""Writing files so that a kill at any moment leaves the old file or the new one, never half of
one: the one atomic writer (:func:`atomic_path`) and the text/JSON writers built on it, plus the
small file helpers every stage shares (a content hash, a safe file name made from an id).

    from scenefit.core.files import atomic_path, write_json
    with atomic_path(out) as tmp:
        image.save(tmp, format="PNG")
    write_json({"n": 3}, run / "summary.json")

Every file the package writes goes through here (a test holds it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping


def file_sha256(path: Path | str) -> str:
    """Content hash of an input file, recorded in manifests so a run names exactly what it read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_SAFE_STEM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,100}$")


def safe_stem(name: str, empty: str = "file") -> str:
    """A file name stem for ``name`` (a sample id, a teacher name): ``name`` itself when it is a
    safe file name, else a sanitised ``name`` plus a short hash of it, so that names differing
    only in unsafe characters ('a/b', 'a_b', 'a b') never share a file (``empty`` stands in for
    a name with nothing safe left)."""
    if _SAFE_STEM.match(name):
        return name
    stem = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)[:60].lstrip(".") or empty
    return f"{stem}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """The one atomic writer: yields a temporary path beside ``path`` (its folder made) to write
    the file to; when the block ends the file is renamed over ``path``, so a kill leaves either
    the old file or the new one, never half of one (the rename is atomic on POSIX). When the block
    raises, the temporary file is removed and ``path`` is left as it was.

        with atomic_path(out) as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_bytes(data: bytes, path: Path | str) -> Path:
    """``data`` written to ``path`` through :func:`atomic_path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(text: str, path: Path | str) -> Path:
    """``text`` (UTF-8) written to ``path`` through :func:`atomic_path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_json(obj: Any, path: Path | str) -> Path:
    """Stable JSON (sorted keys, trailing newline): same content → same bytes; written atomically."""
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_jsonl(rows: Iterable[Mapping[str, Any]], path: Path | str) -> Path:
    """One JSON object per line (sorted keys), written atomically: a rerun replaces the file
    whole and a killed run never leaves half of it."""
    return atomic_write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows), path)

