"""The report: metrics.json + a self-contained report.html, rendered in headless Chromium
(Debian's chromium + chromedriver, installed by `make browser`), and rendering edge cases
(no truth, no probabilities, one class only) without a browser.

    .venv/bin/python -m pytest tests/unit/test_report.py -q
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image, ImageDraw

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.criteria import CRITERIA, Label, fuse
from scenefit.evaluate.config import EvaluateConfig
from scenefit.evaluate.report import SECTION_IDS, render_html, write_report
from scenefit.evaluate.runner import Answer, evaluate_answers, worst_errors

I, O = Label.IN, Label.OUT


def _frames(tmp: Path, n: int = 12, synthetic: bool = True, truth: bool = True, labels=None) -> dict:
    """Hand-made test rows for the three criteria, with small boxed PNGs."""
    frames = {}
    for k in range(n):
        im = Image.new("RGB", (64, 48), (90 + 10 * k % 120, 160, 220))
        ImageDraw.Draw(im).rectangle((10, 10, 30, 30), outline=(255, 0, 0), width=2)
        im.save(tmp / f"s{k}.png")
    for ci, c in enumerate(CRITERIA):
        labs = labels or [O if (k + ci) % 3 == 0 else I for k in range(n)]
        frames[c.value] = pd.DataFrame({
            "id": [f"s{k}" for k in range(n)], "image": [str(tmp / f"s{k}.png") for k in range(n)],
            "object": ["cow" if k % 2 else "car" for k in range(n)], "box": [[10, 10, 31, 31]] * n,
            "criterion": c.value, "label": [x.value for x in labs],
            "analysis": ["It floats in the sky." if x is O else "It stands on the ground." for x in labs],
            "truth": [x.value for x in labs] if truth else [None] * n, "scene": ["farm" if k < n / 2 else "street" for k in range(n)],
            "synthetic": synthetic,
        })
    finals = [fuse(Label(frames[c.value]["label"][k]) for c in CRITERIA).value for k in range(n)]
    for df in frames.values():
        df["final"] = finals
    return frames


def _answers(frames: dict, flip_every: int = 4, garble: int = 5, probs: bool = True) -> dict:
    out = {}
    for name, df in frames.items():
        lst = []
        for k, (i, lab) in enumerate(zip(df["id"], df["label"])):
            lab = Label(lab)
            if k % flip_every == 1:
                lab = I if lab is O else O
            if k == garble:
                lst.append(Answer(i, None, None, None, "gibberish", "no_decision"))
                continue
            p = (0.9 if lab is O else 0.2) if probs else None
            lst.append(Answer(i, lab, p, "It floats in the sky." if lab is O else "It stands on the ground.", "raw", "ok"))
        out[name] = lst
    return out


def _write(tmp: Path, synthetic=True, truth=True, probs=True, labels=None, shortcut=True) -> Path:
    from scenefit.evaluate.report import thumbnail_data_url

    frames = _frames(tmp, synthetic=synthetic, truth=truth, labels=labels)
    student = _answers(frames, probs=probs)
    baseline = {n: [Answer(a.id, I) for a in lst] for n, lst in student.items()}
    sc = {n: [Answer(f"o{k}", I if k else O) for k in range(10)] for n in frames} if shortcut else None
    cfg = EvaluateConfig()
    metrics = evaluate_answers(frames, student, baseline, cfg, sc, "hand-made originals")
    gallery = worst_errors(frames, student, cfg.gallery_size)
    for g in gallery:
        g["thumbnail"] = thumbnail_data_url(g["image"], g["box"], True, 96)
    _, html_path = write_report(metrics, tmp / "report", gallery)
    return html_path


def _chromium():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Debian's chromium and chromedriver are not installed (run `make browser`)")
    os.environ["SE_OFFLINE"] = "true"  # never let selenium fetch a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


@pytest.mark.browser
def test_report_renders_every_section_in_chromium(tmp_path):
    html_path = _write(tmp_path)
    driver = _chromium()
    try:
        driver.get(html_path.resolve().as_uri())
        state = driver.execute_script("""
            const ids = arguments[0];
            const sections = ids.map(id => {
              const s = document.getElementById(id);
              const h = s && s.querySelector('h2');
              return {id, present: !!s, heading: h ? h.textContent : null,
                      height: h ? h.getBoundingClientRect().height : 0};
            });
            const imgs = Array.from(document.images).map(im => ({
              src: im.src.slice(0, 22), ok: im.complete && im.naturalWidth > 0, section: im.closest('section')?.id}));
            const notice = document.getElementById('synthetic-notice');
            return {sections, imgs,
                    notice: notice ? notice.textContent : null,
                    noticeVisible: notice ? notice.getBoundingClientRect().height > 0 : false,
                    headlineRows: document.querySelectorAll('#summary table.headline tbody tr').length,
                    cards: document.querySelectorAll('#gallery .card').length,
                    external: document.querySelectorAll('script[src], link[href], iframe').length};
        """, list(SECTION_IDS))
    finally:
        driver.quit()
    for s in state["sections"]:
        assert s["present"] and s["heading"] and s["height"] > 0, s
    assert state["notice"] == SYNTHETIC_NOTICE and state["noticeVisible"]
    assert state["headlineRows"] == 4  # three criteria + fused
    assert state["cards"] > 0
    assert state["external"] == 0
    assert all(im["src"].startswith("data:image/png;base64") and im["ok"] for im in state["imgs"]), state["imgs"]
    plotted = {im["section"] for im in state["imgs"]}
    assert {"confusion", "comparison", "agreement", "calibration", "shortcut", "gallery"} <= plotted


def test_report_files_and_contract(tmp_path):
    html_path = _write(tmp_path)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for name in ("location", "size", "co_occurrence", "fused"):
        for key in ("accuracy", "f1_out", "macro_f1", "unparseable", "baseline_accuracy", "accuracy_vs_truth"):
            assert key in metrics[name], (name, key)
    assert set(metrics["shortcut"]["in_context_share"]) == {"location", "size", "co_occurrence", "fused"}
    assert metrics["shortcut"]["in_context_share"]["location"] == pytest.approx(0.9)
    assert metrics["notice"] == SYNTHETIC_NOTICE
    html = html_path.read_text()
    assert html.count(SYNTHETIC_NOTICE) >= 1
    assert all(f'id="{sid}"' in html for sid in SECTION_IDS)
    # the headline table shows each accuracy with its interval, the majority rate and balanced accuracy
    loc = metrics["location"]
    lo, hi = loc["accuracy_vs_truth_ci95"]
    assert f"{100 * loc['accuracy_vs_truth']:.1f} % [{100 * lo:.1f}–{100 * hi:.1f}]" in html
    assert "majority rate (vs truth)" in html and "balanced acc [95 % CI] (vs teacher)" in html
    assert f"{100 * loc['majority_rate']:.1f} %" in html
    assert "src=\"http" not in html and "<script" not in html


def test_report_without_truth_probabilities_or_originals(tmp_path):
    html_path = _write(tmp_path, synthetic=False, truth=False, probs=False, shortcut=False)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["synthetic"] is False and "notice" not in metrics
    assert metrics["location"]["accuracy_vs_truth"] is None and metrics["location"]["calibration"] is None
    assert metrics["shortcut"]["available"] is False
    html = html_path.read_text()
    assert SYNTHETIC_NOTICE not in html
    assert "No probabilities in the answers" in html and "Not run:" in html


def test_report_on_one_class_data_does_not_crash(tmp_path):
    html_path = _write(tmp_path, labels=[I] * 12)
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["size"]["student"]["support"] == {"In-context": 12, "Out-of-context": 0}
    assert metrics["size"]["recall_out"] is None  # no out-of-context reference: undefined, not 0
    assert "<h2>Worst errors</h2>" in html_path.read_text()
    assert render_html(metrics).startswith("<!doctype html>")
