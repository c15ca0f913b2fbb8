"""The benchmarks' contract as run_all.py reads it: ratio lines, BENCH_ARGS, the generated section
of RESULTS.md, script discovery; and the toy scenes every benchmark draws stay valid requests.

    .venv/bin/python -m pytest tests/unit/test_benchmark_contract.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run_all  # noqa: E402
from _report import parse_ratios, parse_skipped, ratio, shown_command, skipped  # noqa: E402


def test_ratio_lines_round_trip_and_other_lines_are_ignored(capsys):
    ratio("tiny.fast_vs_reference", 11.84321, what="fast 103.9 vs reference 8.8 images/s", goal=">= 10", met=True)
    ratio("nothing_measured", float("nan"))
    print("RATIO broken line without a value\nspeed 12 images/s\nRATIO bad=notanumber")
    got = parse_ratios(capsys.readouterr().out)
    assert [r["name"] for r in got] == ["tiny.fast_vs_reference", "nothing_measured"]
    assert got[0]["value"] == pytest.approx(11.84, abs=1e-2)
    assert got[0]["goal"] == ">= 10" and got[0]["met"] is True and "103.9" in got[0]["what"]
    assert got[1]["value"] != got[1]["value"]  # nan


def test_a_script_that_cannot_run_here_says_why(capsys):
    skipped("ray is not installed (pip install 'scenefit[ray]')")
    assert parse_skipped(capsys.readouterr().out) == "ray is not installed (pip install 'scenefit[ray]')"
    assert parse_skipped("RATIO a=1\nall measured") is None


def test_bench_args_are_read_from_the_source_without_importing_it(tmp_path):
    (tmp_path / "a.py").write_text("import not_installed_anywhere\nBENCH_ARGS = ['--seconds', '5']\n")
    (tmp_path / "b.py").write_text('BENCH_ARGS = "smoke"\n')
    (tmp_path / "c.py").write_text("x = 1\n")
    (tmp_path / "d.py").write_text("BENCH_ARGS = 5\n")
    assert run_all.bench_args(tmp_path / "a.py") == ["--seconds", "5"]
    assert run_all.bench_args(tmp_path / "b.py") == "smoke"
    assert run_all.bench_args(tmp_path / "c.py") == []
    with pytest.raises(SystemExit, match="d.py: BENCH_ARGS"):
        run_all.bench_args(tmp_path / "d.py")


def test_the_generated_section_is_replaced_and_the_hand_written_text_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(f"# Results\n\nintro by hand\n\n{run_all.BEGIN}\nold table\n{run_all.END}\n\nnotes by hand\n")
    run_all.write_section(path, f"{run_all.BEGIN}\nnew table\n{run_all.END}")
    text = path.read_text()
    assert "old table" not in text and text.count("new table") == 1
    assert text.index("intro by hand") < text.index("new table") < text.index("notes by hand")
    fresh = tmp_path / "NEW.md"
    fresh.write_text("only prose\n")
    run_all.write_section(fresh, f"{run_all.BEGIN}\nnew table\n{run_all.END}")
    assert fresh.read_text().startswith("only prose\n") and run_all.END in fresh.read_text()


def test_every_benchmark_script_is_discovered_and_declares_usable_bench_args():
    found = {p.name for p in run_all.discover()}
    on_disk = {p.name for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"}
    assert found == on_disk and {"student_inference.py", "gpu_all.py"} <= found
    for script in run_all.discover():
        assert run_all.bench_args(script) == "smoke" or isinstance(run_all.bench_args(script), list)


def test_results_show_commands_without_machine_paths():
    shown = shown_command("run_all.py", ["--smoke", "--out", "/tmp/x/out", "--results=/home/me/R.md", "--only", "memory"])
    assert shown == "benchmarks/run_all.py --smoke --out OUT --results=RESULTS --only memory"


def test_toy_scenes_are_valid_requests():
    """Every toy box lies inside its image with non-negative corners (a negative corner is a
    bad_box: serve answers 422, which once broke serve_load.py)."""
    from scenefit.core.images import check_box
    from scenefit.testbed.toy_students import toy_items

    for seed in range(10):
        items, _ = toy_items(64, seed=seed)
        for image, _, box in items:
            assert min(box) >= 0 and check_box(box, image.size) == tuple(box)
