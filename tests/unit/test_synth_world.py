"""The synthetic world: truth visible in the pixels, determinism, rates, groups, originals, CLI.

    .venv/bin/python -m pytest tests/unit/test_synth_world.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.config import ConfigError, packaged_configs_dir, resolve
from scenefit.core.criteria import CRITERIA, Criterion, Label
from scenefit.core.records import MANIFEST_COLUMNS, Sample
from scenefit.testbed.catalog import BOX_RED, CATEGORIES, PERSON_SHIRT, SCENES
from scenefit.testbed.render import render_scene
from scenefit.testbed.world import WorldConfig, WorldExistsError, generate_world, iter_layouts, load_layouts

N = 400
GAP = WorldConfig().sky_gap


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_world(WorldConfig(n=N, seed=11), out)
    return out


@pytest.fixture(scope="module")
def layouts(world) -> list[dict]:
    return [json.loads(line) for line in (world / "layout.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def samples(world) -> list[Sample]:
    return [Sample.from_row(r) for r in pq.read_table(world / "manifest.parquet").to_pylist()]


def pixels(world: Path, lay: dict) -> np.ndarray:
    return np.asarray(Image.open(world / "images" / f"{lay['id']}.png").convert("RGB")).astype(int)


def red_bbox(img: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.all(img == BOX_RED, axis=-1))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_manifest_is_normalised_boxed_synthetic(world, samples, layouts):
    table = pq.read_table(world / "manifest.parquet")
    assert table.column_names == MANIFEST_COLUMNS
    assert len(samples) == N == len(layouts)
    assert [s.id for s in samples] == [lay["id"] for lay in layouts]
    for s, lay in zip(samples, layouts):
        assert s.boxed and s.synthetic and s.scene in SCENES and s.group
        assert set(s.truth) == set(CRITERIA)
        assert (world / s.image).is_file()
        assert list(s.box) == lay["target"]["box"] and s.object == lay["target"]["category"]
        assert {c.value: s.truth[c].value for c in CRITERIA} == lay["truth"]
        assert lay["synthetic"] is True
    summary = json.loads((world / "world.json").read_text())
    assert summary["notice"] == SYNTHETIC_NOTICE and summary["synthetic"] is True
    assert summary["counts"]["samples"] == N and sum(summary["counts"]["per_scene"].values()) == N
    assert SYNTHETIC_NOTICE in table.schema.metadata[b"scenefit"].decode("unicode_escape")


def test_red_box_in_pixels_is_the_recorded_box(world, layouts):
    for lay in layouts[:120]:
        img = pixels(world, lay)
        x0, y0, x1, y1 = lay["target"]["box"]
        assert red_bbox(img) == (x0, y0, x1, y1), lay["id"]  # the only pure red is the box
        edges = np.concatenate([img[y0, x0:x1], img[y1 - 1, x0:x1], img[y0:y1, x0], img[y0:y1, x1 - 1]])
        assert np.all(edges == BOX_RED), lay["id"]


def test_horizon_is_sharp_sky_above_ground_below(world, layouts):
    for lay in layouts[:120]:
        img = pixels(world, lay)
        h = lay["horizon"]
        above = np.mean(np.all(img[h - 1] == lay["sky_color"], axis=-1))
        below = np.mean(np.all(img[h] == lay["ground_color"], axis=-1))
        assert above > 0.4 and below > 0.4, lay["id"]  # objects may cover part of a row
        assert np.all(img[0, :] == lay["sky_color"]) or lay["target"]["box"][1] <= 2
        # Strongly distinct palettes: sky and ground far apart in colour.
        assert np.abs(np.subtract(lay["sky_color"], lay["ground_color"])).sum() > 90


def test_location_truth_against_pixels(world, layouts):
    seen = {"out": 0, "in_ground": 0, "in_sky": 0}
    for lay in layouts:
        t, h = lay["target"], lay["horizon"]
        x0, y0, x1, y1 = t["box"]
        truth = Label(lay["truth"]["location"])
        if truth is Label.OUT:
            seen["out"] += 1
            assert not CATEGORIES[t["category"]].flying
            assert y1 <= h - GAP * lay["image_size"] + 1, lay["id"]  # bottom well above the horizon
            img = pixels(world, lay)
            # Between the box bottom and the horizon under the box's centre: nothing but sky.
            col = img[y1:h, (x0 + x1) // 2]
            assert np.all(col == lay["sky_color"]), lay["id"]
        elif y1 > h:
            seen["in_ground"] += 1
            assert y1 >= h + GAP * lay["image_size"] - 1, lay["id"]  # clearly standing, not grazing the horizon
        else:
            seen["in_sky"] += 1
            assert CATEGORIES[t["category"]].flying, lay["id"]  # only things that fly may be up there
    assert min(seen.values()) > 0, seen


def test_size_truth_against_reference_person(world, layouts):
    for lay in layouts[:200]:
        img = pixels(world, lay)
        person = lay["references"][0]
        assert person["category"] == "person"
        px0, py0, px1, py1 = person["box"]
        assert np.any(np.all(img[py0:py1, px0:px1] == PERSON_SHIRT, axis=-1)), lay["id"]  # drawn, visible
        x0, y0, x1, y1 = red_bbox(img)
        ratio = (y1 - y0) / (py1 - py0)
        truth = Label(lay["truth"]["size"])
        if truth is Label.IN:
            assert 0.6 <= ratio <= 1.2, (lay["id"], ratio)
        elif lay["target"]["size_class"] == "small":
            assert ratio <= 0.4, (lay["id"], ratio)
        else:
            assert ratio >= 1.6, (lay["id"], ratio)
    # The person is the stable reference: one height across the world.
    assert len({lay["references"][0]["box"][3] - lay["references"][0]["box"][1] for lay in layouts}) == 1


def test_co_occurrence_truth_follows_the_category_home(world, layouts):
    for lay in layouts:
        home = lay["scene"] in CATEGORIES[lay["target"]["category"]].home
        assert (Label(lay["truth"]["co_occurrence"]) is Label.IN) == home, lay["id"]
        # The background is the scene type's palette (within the configured jitter).
        scene = SCENES[lay["scene"]]
        assert np.abs(np.subtract(lay["sky_color"], scene.sky)).max() <= 8
        assert np.abs(np.subtract(lay["ground_color"], scene.ground)).max() <= 8
        for ref in lay["references"][1:]:
            assert lay["scene"] in CATEGORIES[ref["category"]].home  # context objects belong there
        for ref in lay["references"]:
            assert ref["box"][1] > lay["horizon"], lay["id"]  # the sky holds nothing but the target


def test_violation_rates_match_config(samples):
    for c in CRITERIA:
        rate = sum(s.truth[c] is Label.OUT for s in samples) / len(samples)
        assert abs(rate - 0.3) < 0.07, (c, rate)


def test_rates_follow_the_config_at_the_extremes():
    cfg = WorldConfig(n=60, seed=2, violation_rates={"size": 1.0, "location": 0.0, "co-occurrence": 0.5})
    lays = [lay for lay, _ in iter_layouts(cfg)]
    assert all(lay["truth"]["size"] == Label.OUT.value for lay in lays)
    assert all(lay["truth"]["location"] == Label.IN.value for lay in lays)
    assert 10 < sum(lay["truth"]["co_occurrence"] == Label.OUT.value for lay in lays) < 50


def test_groups_share_the_background(world, layouts):
    groups: dict[str, list[dict]] = {}
    for lay in layouts:
        groups.setdefault(lay["group"], []).append(lay)
    assert len(groups) == N // 4 and all(len(v) == 4 for v in groups.values())
    for members in list(groups.values())[:20]:
        first = members[0]
        imgs = [pixels(world, m) for m in members]
        keep = np.ones(imgs[0].shape[:2], bool)  # pixels no target of the group touches
        for m in members:
            x0, y0, x1, y1 = m["target"]["box"]
            keep[y0:y1, x0:x1] = False
        for m, img in zip(members[1:], imgs[1:]):
            assert (m["scene"], m["horizon"], m["references"]) == (first["scene"], first["horizon"], first["references"])
            assert np.array_equal(img[keep], imgs[0][keep])


def test_render_scene_reproduces_the_saved_image(world, layouts):
    for lay in layouts[:10]:
        assert np.array_equal(np.asarray(render_scene(lay)).astype(int), pixels(world, lay))


def test_originals_all_in_context_and_unmodified(world, layouts):
    orig = world / "originals"
    table = pq.read_table(orig / "manifest.parquet")
    assert table.column_names == MANIFEST_COLUMNS
    originals = [Sample.from_row(r) for r in table.to_pylist()]
    groups = {lay["group"]: lay for lay in layouts}
    assert {s.group for s in originals} == set(groups)
    assert json.loads((orig / "world.json").read_text())["notice"] == SYNTHETIC_NOTICE
    by_id = load_layouts(world)  # samples and originals together
    for s in originals:
        assert s.synthetic and s.boxed and all(s.truth[c] is Label.IN for c in CRITERIA)
        assert s.scene in CATEGORIES[s.object].home
        lay = by_id[s.id]
        img = np.asarray(Image.open(orig / s.image).convert("RGB")).astype(int)
        assert red_bbox(img) == tuple(s.box)
        # The boxed object is one the scene already had, where it stood in every sample of the group.
        sample_lay = groups[s.group]
        assert any(r["category"] == s.object and r["box"] == list(s.box) for r in sample_lay["references"])
        assert lay["horizon"] == sample_lay["horizon"] and lay["sky_color"] == sample_lay["sky_color"]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    cfg = WorldConfig(n=24, seed=5, samples_per_group=3)
    generate_world(cfg, tmp_path / "a")
    generate_world(cfg, tmp_path / "b")
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) > 24 and a == b
    generate_world(cfg.model_copy(update={"seed": 6}), tmp_path / "c")
    c = _files(tmp_path / "c")
    assert a["manifest.parquet"] != c["manifest.parquet"]
    assert sum(a[k] != c[k] for k in a if k.startswith("images/")) > 20


def test_rerun_same_config_is_allowed_other_config_refused(tmp_path):
    generate_world(WorldConfig(n=12, seed=1), tmp_path / "w")
    generate_world(WorldConfig(n=12, seed=1), tmp_path / "w")  # same config: rewrites the same files
    with pytest.raises(WorldExistsError, match="another config"):
        generate_world(WorldConfig(n=8, seed=1), tmp_path / "w")
    generate_world(WorldConfig(n=8, seed=1), tmp_path / "w", overwrite=True)
    assert len(list((tmp_path / "w" / "images").glob("*.png"))) == 8  # no stale images left
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(WorldExistsError, match="not empty"):
        generate_world(WorldConfig(n=4), tmp_path / "foreign")


def test_image_size_scales_the_geometry(tmp_path):
    generate_world(WorldConfig(n=8, seed=3, image_size=224, box_width=4, originals=False), tmp_path)
    assert not (tmp_path / "originals").exists()
    for lay in (json.loads(x) for x in (tmp_path / "layout.jsonl").read_text().splitlines()):
        img = pixels(tmp_path, lay)
        assert img.shape == (224, 224, 3) and red_bbox(img) == tuple(lay["target"]["box"])


@pytest.mark.parametrize("bad, message", [
    ({"violation_rates": {"colour": 0.2}}, "unknown criterion"),
    ({"violation_rates": {"size": 1.5}}, "not a probability"),
    ({"scenes": ["moon"]}, "unknown or no scene types"),
    ({"big_factor": [3.0, 2.0]}, "min <= max"),
    ({"small_factor": [0.3, 0.9]}, "must not touch"),
    ({"horizon": [0.3, 0.4]}, "floating too-big target"),
])
def test_config_errors_name_the_field(bad, message):
    with pytest.raises(ConfigError, match=message):
        resolve("world", overrides=bad)


def test_cli_synth_writes_world_and_says_synthetic(tmp_path):
    from scenefit.cli import app

    out = tmp_path / "w"
    r = CliRunner().invoke(app, ["synth", "--n", "10", "--out", str(out), "--seed", "4", "--scenes-per-group", "5",
                                 "--set", "violation_rates.size=0.5", "--json"])
    assert r.exit_code == 0, r.output
    assert "SYNTHETIC" in r.output
    summary = json.loads((out / "world.json").read_text())
    assert summary["config"]["samples_per_group"] == 5 and summary["counts"]["groups"] == 2
    assert summary["config"]["violation_rates"] == {"location": 0.3, "size": 0.5, "co_occurrence": 0.3}
    r2 = CliRunner().invoke(app, ["synth", "--n", "11", "--out", str(out)])
    assert r2.exit_code == 2 and "another config" in r2.output


def test_shipped_configs_have_a_world_section():
    for name in ("demo", "paper"):
        cfg = resolve("world", packaged_configs_dir() / f"{name}.yaml")
        assert isinstance(cfg, WorldConfig) and cfg.n > 0
    assert Criterion.LOCATION.value in WorldConfig().violation_rates
