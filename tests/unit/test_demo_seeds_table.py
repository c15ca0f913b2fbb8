"""benchmarks/demo_seeds.py's parts that need no model: seeds moved together, the spread, the
table and its place between the markers.

    .venv/bin/python -m pytest tests/unit/test_demo_seeds_table.py -q
"""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="module")
def seeds(repo_root):
    spec = importlib.util.spec_from_file_location("demo_seeds", repo_root / "benchmarks" / "demo_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_k_moves_every_seed_and_the_ablation_drops_the_pretraining(seeds):
    base = {"tiny_model": {"seed": 0, "vision_pretrain_seed": 7, "knowledge_pretrain_seed": 11, "vision_pretrain_steps": 9},
            "world": {"seed": 0}, "split": {"seed": 0}, "datasets": {"seed": 0}, "train": {"seed": 0}}
    two = seeds.seeded_config(base, 2, smoke=False)
    assert {two[s][k] for s, k in seeds.SEED_KEYS} >= {2000, 2007, 2011}
    assert [two[s][k] - base[s][k] for s, k in seeds.SEED_KEYS] == [2000] * len(seeds.SEED_KEYS)
    assert two["evaluate"]["probe"] is True and base["tiny_model"]["seed"] == 0  # the base config untouched
    ablation = seeds.seeded_config(base, 0, smoke=False, pretrained=False)
    assert ablation["tiny_model"]["vision_pretrain_steps"] == 0 and ablation["tiny_model"]["knowledge_pretrain_steps"] == 0


def test_spread_is_mean_sd_and_range_in_percent(seeds):
    assert seeds.spread([0.9, 0.95, 1.0]) == "95.0 ± 5.0 (90.0–100.0)"
    assert seeds.spread([0.5, None]) == "50.0" and seeds.spread([None]) == "–"


def test_the_table_lands_between_the_markers_once(seeds, tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text(f"intro\n{seeds.BEGIN}\nold\n{seeds.END}\noutro\n")
    seeds.write_between_markers(doc, "| new |\n")
    seeds.write_between_markers(doc, "| newer |\n")
    text = doc.read_text()
    assert text == f"intro\n{seeds.BEGIN}\n| newer |\n{seeds.END}\noutro\n"
    fresh = tmp_path / "fresh.md"
    seeds.write_between_markers(fresh, "| t |\n")
    assert fresh.read_text() == f"{seeds.BEGIN}\n| t |\n{seeds.END}\n"
