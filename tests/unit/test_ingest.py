"""`scenefit ingest`: a whole batch with every bad-image kind, boxes drawn, errors.jsonl,
--strict, idempotent reruns, the paper layout, and the config section.

    .venv/bin/python -m pytest tests/unit/test_ingest.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir, resolve
from scenefit.core.records import MANIFEST_COLUMNS
from scenefit.data.ingest import IngestConfig, image_name, ingest
from scenefit.data.manifest import read_manifest
from support.images import noise_image, write_bad_images

ROOT = Path(__file__).resolve().parents[2]
GREY = (128, 128, 128)


def grey_image(path: Path, size=(64, 48), fmt=None) -> Path:
    Image.new("RGB", size, GREY).save(path, format=fmt)
    return path


@pytest.fixture()
def batch(tmp_path) -> dict:
    """A JSONL manifest: two good unboxed images, one already boxed, one box outside its image,
    and one sample per bad-image kind (relative paths, resolved against the manifest)."""
    data = tmp_path / "data"
    bad = write_bad_images(data / "bad")
    grey_image(data / "good1.png")
    grey_image(data / "good2.jpg", fmt="JPEG")
    noise_image(40, 30).save(data / "boxed.png")
    rows = [
        {"id": "good1", "image": "good1.png", "object": "zebra", "box": [8, 6, 40, 30]},
        {"id": "good2", "image": "good2.jpg", "object": "cow", "box": [40, 30, 70, 52]},  # overhangs a little: clipped
        {"id": "pre", "image": "boxed.png", "object": "dog", "boxed": True},
        {"id": "outside", "image": "good1.png", "object": "cat", "box": [100, 100, 120, 120]},
    ]
    expected = {"outside": "box_outside"}
    for kind, (path, code) in bad.items():
        rows.append({"id": f"bad_{kind}", "image": str(path.relative_to(data)), "object": "horse", "box": [0, 0, 4, 4]})
        expected[f"bad_{kind}"] = code
    manifest = data / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"manifest": manifest, "expected": expected, "data": data}


def _red(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return (a[..., 0] == 255) & (a[..., 1] == 0) & (a[..., 2] == 0)


def test_batch_keeps_good_samples_and_names_each_bad_one(batch, tmp_path):
    out = tmp_path / "out"
    result = ingest(batch["manifest"], out, IngestConfig(box_width=2, workers=2))
    assert [s.id for s in result.samples] == ["good1", "good2", "pre"]
    codes = {e["id"]: e["code"] for e in result.errors}
    assert codes == batch["expected"]
    for e in result.errors:
        assert e["id"] in e["message"]  # each reason names its sample

    # errors.jsonl: one line per rejected sample, with id, reason and code
    lines = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert {x["id"]: x["code"] for x in lines} == batch["expected"]
    assert all(x["message"] for x in lines)

    # the normalised manifest: exactly the columns, everything boxed, absolute paths
    table = pq.read_table(out / "manifest.parquet")
    assert table.column_names == MANIFEST_COLUMNS
    samples, errors = read_manifest(out / "manifest.parquet")
    assert errors == [] and all(s.boxed and Path(s.image).is_absolute() for s in samples)
    by_id = {s.id: s for s in samples}

    drawn = Path(by_id["good1"].image)
    assert drawn == (out / "images" / "good1.png").resolve()
    red = _red(drawn)
    assert red[6, 8:40].all() and red[6:30, 8].all() and red[29, 8:40].all() and red[6:30, 39].all()
    assert not red[9:27, 11:37].any() and not red[:5].any()  # interior and outside untouched
    assert by_id["good1"].box == (8, 6, 40, 30)

    assert by_id["good2"].box == (40, 30, 64, 48)  # clipped to the 64x48 image, as drawn
    assert result.clipped == 1 and result.drawn == 2

    # already-boxed image: validated, referenced in place, not copied
    assert by_id["pre"].image == str((batch["data"] / "boxed.png").resolve())
    assert sorted(p.name for p in (out / "images").iterdir()) == ["good1.png", "good2.jpg"]  # a JPEG stays JPEG

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 3 and summary["rejected"] == len(batch["expected"])
    assert summary["rejected_by_code"]["bomb"] == 2 and summary["synthetic"] is False


def test_cli_counts_strict_and_idempotent_rerun(batch, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli_out"
    args = ["ingest", str(batch["manifest"]), "--out", str(out), "--box-width", "3", "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["ok"] == 3 and summary["rejected_by_code"]["truncated"] == 2
    assert "rejected" in first.stderr and "SYNTHETIC" not in first.stderr

    snapshot = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    again = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert again == snapshot  # same files, same bytes: nothing appended or duplicated

    strict = runner.invoke(app, args + ["--strict"])
    assert strict.exit_code == 1
    assert "rejected" in strict.stderr


def test_rerun_removes_boxed_copies_the_new_manifest_no_longer_uses(batch, tmp_path):
    out = tmp_path / "out"
    ingest(batch["manifest"], out, IngestConfig())
    copies = {p.name for p in (out / "images").iterdir()}
    assert {image_name("good1"), image_name("good2", "JPEG")} <= copies
    (out / "images" / "keep_me.png").write_bytes(b"not ingest's")  # a file no sample of the manifest names
    (batch["data"] / "good2.jpg").write_bytes(b"broken now")  # good2 is rejected on the rerun
    rerun = ingest(batch["manifest"], out, IngestConfig())
    assert "good2" not in {s.id for s in rerun.samples}
    left = {p.name for p in (out / "images").iterdir()}
    assert image_name("good2", "JPEG") not in left  # no stale copy of a rejected sample
    assert image_name("good1") in left and "keep_me.png" in left


def test_cli_strict_passes_a_clean_batch_and_flags_synthetic(tmp_path):
    grey_image(tmp_path / "s1.png")
    rows = [{"id": "s1", "image": "s1.png", "object": "cow", "box": "1,1,20,20", "synthetic": True}]
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,image,object,box,synthetic\n" + "".join(
        f'{r["id"]},{r["image"]},{r["object"]},"{r["box"]}",{r["synthetic"]}\n' for r in rows))
    res = CliRunner().invoke(app, ["ingest", str(manifest), "--out", str(tmp_path / "o"), "--strict"])
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.stderr
    assert (tmp_path / "o" / "errors.jsonl").read_text() == ""
    meta = json.loads(pq.read_schema(tmp_path / "o" / "manifest.parquet").metadata[b"scenefit"])
    assert "SYNTHETIC" in meta["notice"]


def test_cli_reports_an_unreadable_manifest(tmp_path):
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not found" in res.stderr


def test_paper_layout_ingest(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    grey_image(images / "139.png")
    (images / "285.png").write_text("not an image")
    manifest = tmp_path / "paper.csv"
    manifest.write_text("coco_index,replacement_object\n139,zebra\n285,banana\n999,kite\n")
    res = CliRunner().invoke(app, ["ingest", str(manifest), "--out", str(tmp_path / "o"),
                                   "--layout", "paper", "--images-dir", str(images)])
    assert res.exit_code == 0, res.output
    samples, _ = read_manifest(tmp_path / "o" / "manifest.parquet")
    assert [(s.id, s.group, s.boxed, s.image) for s in samples] == [
        ("139", "139", True, str((images / "139.png").resolve()))
    ]
    errors = [json.loads(x) for x in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()]
    assert {e["id"]: e["code"] for e in errors} == {"285": "not_image", "999": "not_found"}
    assert not list((tmp_path / "o" / "images").iterdir())  # boxed images are never copied


def test_unsafe_ids_get_distinct_file_names():
    names = {image_name(i) for i in ("a/b", "a_b", "a b", "../x", ".hidden")}
    assert len(names) == 5 and all("/" not in n and not n.startswith(".") for n in names)
    assert image_name("coco_139") == "coco_139.png"


@pytest.mark.parametrize("name", ["demo.yaml", "paper.yaml"])
def test_shipped_configs_have_an_ingest_section(name):
    cfg = resolve("ingest", packaged_configs_dir() / name)
    assert isinstance(cfg, IngestConfig) and cfg.box_width >= 1
    if name == "paper.yaml":
        assert cfg.layout == "auto"  # the paper's layout is detected; a plain manifest is read by its columns


def test_config_rejects_nonsense():
    from scenefit.core.config import ConfigError

    with pytest.raises(ConfigError):
        resolve("ingest", overrides={"box_width": 0})
    with pytest.raises(ConfigError):
        resolve("ingest", overrides={"allowed_formats": []})
