"""`ingest` on photographs: a JPEG stays a JPEG when its box is drawn (quality 95, colour at full
resolution), upright after EXIF orientation with no orientation tag left, and the stage reports
bytes in and out (issue 26 item 3). The photographs are the ones matplotlib and scikit-learn
ship (both are dependencies).

    .venv/bin/python -m pytest tests/unit/test_ingest_photos.py -q
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.data.ingest import IngestConfig, ingest


def photo(name: str) -> Path:
    """A photograph shipped by a dependency: 'china' (640 x 427) or 'hopper' (512 x 600)."""
    if name == "china":
        import sklearn

        return Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def red(a: np.ndarray) -> np.ndarray:
    """Pixels of the drawn red, after a JPEG round trip (not exactly 255, 0, 0)."""
    a = a.astype(int)
    return (a[..., 0] > 200) & (a[..., 1] < 60) & (a[..., 2] < 60)


def test_a_jpeg_photo_stays_jpeg_and_the_bytes_are_reported(tmp_path):
    src = photo("china")
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["ingest", str(manifest(tmp_path, [
        {"id": "p1", "image": str(src), "object": "pagoda", "box": [100, 80, 400, 300]}])), "--out", str(out)])
    assert res.exit_code == 0, res.output
    copy = out / "images" / "p1.jpg"
    with Image.open(copy) as im:
        assert im.format == "JPEG" and im.size == (640, 427)
        assert JpegImagePlugin.get_sampling(im) == 0  # 4:4:4: the thin red line keeps its colour
        a = np.asarray(im.convert("RGB")).astype(int)
    b = np.asarray(Image.open(src).convert("RGB")).astype(int)
    line = red(a)
    assert line[80:83, 100:400].mean() > 0.9 and line[120:260, 140:360].mean() < 0.01
    outside = np.ones(line.shape, bool)
    outside[70:310, 90:410] = False
    assert np.abs(a - b)[outside].mean() < 3  # quality 95: the photo itself barely changes
    summary = json.loads((out / "summary.json").read_text())["boxed_copies"]
    size_in, size_out = os.path.getsize(src), copy.stat().st_size
    assert summary["bytes_in"] == size_in and summary["bytes_out"] == size_out and summary["images"] == 1
    assert summary["by_format"] == {"JPEG": {"images": 1, "bytes_in": size_in, "bytes_out": size_out}}
    assert size_out < 2 * size_in  # a PNG of it is ~4x the JPEG
    said = " ".join(res.output.split())
    assert "boxed copies: 1 images" in said and f"{size_in / 1e6:.2f} MB in" in said and "quality 95" in said


def test_an_exif_rotated_photo_is_written_upright_without_an_orientation_tag(tmp_path):
    """A phone's portrait photo: pixels stored on their side plus Orientation 6. The box is in
    the upright picture; the copy is upright, boxed there, and carries no tag to turn it again."""
    upright = Image.open(photo("hopper")).convert("RGB")  # 512 x 600
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what Orientation 6 turns upright again
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "portrait.jpg"
    stored.save(src, format="JPEG", quality=92, exif=exif.tobytes())
    assert ImageOps.exif_transpose(Image.open(src)).size == upright.size
    out = tmp_path / "out"
    result = ingest(manifest(tmp_path, [{"id": "r", "image": str(src), "object": "person", "box": [50, 100, 450, 500]}]),
                    out, IngestConfig(box_width=4))
    assert not result.errors
    with Image.open(out / "images" / "r.jpg") as im:
        assert im.size == upright.size and im.getexif().get(0x0112) in (None, 1)
        a = np.asarray(im.convert("RGB")).astype(int)
    line = red(a)
    assert line[100:104, 50:450].mean() > 0.9 and line[100:500, 50:54].mean() > 0.9
    assert np.abs(a - np.asarray(upright).astype(int))[200:400, 150:350].mean() < 4  # the right way up


@pytest.mark.parametrize("fmt", ["PNG", "BMP"])
def test_other_formats_are_written_as_png(tmp_path, fmt):
    src = tmp_path / f"scene.{fmt.lower()}"
    Image.open(photo("china")).convert("RGB").save(src, format=fmt)
    out = tmp_path / "out"
    result = ingest(manifest(tmp_path, [{"id": "s", "image": str(src), "object": "pagoda", "box": [10, 10, 90, 90]}]),
                    out, IngestConfig())
    assert [s.image for s in result.samples] == [str((out / "images" / "s.png").resolve())]
    assert list(result.summary()["boxed_copies"]["by_format"]) == ["PNG"]
