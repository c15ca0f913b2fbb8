"""Write the evaluation report: ``metrics.json`` and one self-contained ``report.html``.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --out runs/demo/report

The page needs no network and no files beside it: every plot is a PNG rendered with
matplotlib's Agg backend and embedded as a base64 data URL, and so are the gallery
thumbnails. Sections carry fixed ids (:data:`SECTION_IDS`) that the browser test checks.
Everything here reads the metrics dict made by :mod:`scenefit.evaluate.runner`, so the page
can be re-rendered from a saved ``metrics.json`` (gallery aside).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Optional, Sequence

from scenefit import SYNTHETIC_NOTICE
from scenefit.core.files import atomic_write_text, write_json
from scenefit.evaluate.metrics import HEADLINE_KEYS, headline_key, headline_value

#: Section ids of report.html, in page order.
SECTION_IDS = (
    "summary", "confusion", "comparison", "agreement", "calibration", "reasoning", "errors", "shortcut",
    "gallery", "method",
)
_COLOURS = {"student": "#2f6fb0", "baseline": "#b0b0b0", "teacher": "#e08a2c"}


def _pct(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def pct_ci(x: Optional[float], ci: Optional[Sequence[float]], unit: str = " %", ci_digits: int = 1) -> str:
    """A share with its 95 % interval: "91.2 % [88.0–93.6]" (``ci_digits`` 0: "91.2% [88–94]")."""
    if x is None:
        return "–"
    return f"{100 * x:.1f}{unit}" + (f" [{100 * ci[0]:.{ci_digits}f}–{100 * ci[1]:.{ci_digits}f}]" if ci else "")


def _num(x: Optional[float], digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _figure_data_url(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: no display, same bytes everywhere
    import matplotlib.pyplot as plt

    return plt


def _canonical(name: str) -> int:
    """Sort key: the three criteria in canonical order, then ``fused`` (JSON files sort keys)."""
    order = ["location", "size", "co_occurrence", "fused"]
    return order.index(name) if name in order else len(order)


def columns(metrics: dict[str, Any]) -> list[str]:
    """Criterion names present in the metrics, then ``fused`` when present."""
    names = [c for c in metrics.get("criteria", []) if c in metrics]
    return names + (["fused"] if "fused" in metrics else [])


def plot_confusions(metrics: dict[str, Any]) -> str:
    """One 2x3 panel per criterion: references (rows) x answers (In, Out, unparseable)."""
    plt = _pyplot()
    names = columns(metrics)
    fig, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        conf = metrics[name]["student"]["confusion"]
        labels = conf["labels"]
        grid = [row + [conf["unparseable"][lab]] for row, lab in zip(conf["matrix"], labels)]
        top = max([v for row in grid for v in row[:2]] + [1])
        ax.imshow([[float(v) for v in row[:2]] + [0.0] for row in grid], cmap="Blues", vmin=0, vmax=top)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                dark = j < 2 and v > 0.6 * top  # white digits on dark cells
                ax.text(j, i, str(v), ha="center", va="center", color="white" if dark else "#111", fontsize=11)
        ax.set_xticks(range(3), ["In", "Out", "unparse-\nable"])
        ax.set_yticks(range(2), ["In", "Out"])
        ax.set_xlabel("student answer")
        ax.set_ylabel("teacher" if name != "fused" else "teacher final")
        ax.set_title(metrics[name].get("display", name))
    fig.tight_layout()
    return _figure_data_url(fig)


def plot_comparison(metrics: dict[str, Any]) -> str:
    """Accuracy bars per criterion: student, baseline, teacher — vs the teacher, and vs truth if
    known — with their 95 % intervals and the majority-class rate as a dashed mark."""
    plt = _pyplot()
    names = columns(metrics)
    has_truth = any(metrics[n].get("accuracy_vs_truth") is not None for n in names)
    panels = [("vs teacher labels", "", ("", "baseline_"))]
    if has_truth:
        panels.append(("vs ground truth (synthetic)", "_vs_truth", ("", "baseline_", "teacher_")))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 3.4), squeeze=False)
    width = 0.27
    whos = {"": "student", "baseline_": "baseline", "teacher_": "teacher"}
    legend = {"student": "student", "baseline": "untrained base (floor)", "teacher": "teacher"}
    for ax, (title, suffix, prefixes) in zip(axes[0], panels):
        for k, prefix in enumerate(("", "baseline_", "teacher_")):
            if prefix in prefixes:
                vals = [headline_value(metrics[n], "accuracy", prefix, suffix) for n in names]
                cis = [headline_value(metrics[n], "accuracy_ci95", prefix, suffix) for n in names]
            else:  # the teacher's labels are the reference: 100 % by definition
                vals, cis = [1.0] * len(names), [None] * len(names)
            xs = [i + (k - 1) * width for i in range(len(names))]
            errs = [[max(0.0, v - c[0]) if v is not None and c else 0.0 for v, c in zip(vals, cis)],
                    [max(0.0, c[1] - v) if v is not None and c else 0.0 for v, c in zip(vals, cis)]]
            ax.bar(xs, [v or 0.0 for v in vals], width, label=legend[whos[prefix]], color=_COLOURS[whos[prefix]],
                   yerr=errs, error_kw={"elinewidth": 0.8, "capsize": 2})
            for x, v in zip(xs, vals):
                ax.text(x, (v or 0.0) + 0.01, "–" if v is None else f"{100 * v:.0f}", ha="center", fontsize=7)
        for i, n in enumerate(names):
            rate = metrics[n].get(f"majority_rate{suffix}")
            if rate is not None:
                ax.hlines(rate, i - 1.5 * width, i + 1.5 * width, colors="#333", linestyles="dashed", lw=1,
                          label="majority rate" if i == 0 else None)
        ax.set_xticks(range(len(names)), [metrics[n].get("display", n) for n in names])
        ax.set_ylim(0, 1.3)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_ylabel("accuracy")
        ax.set_title(title)
        ax.legend(fontsize=8, loc="upper center", ncol=4, frameon=False)
    fig.tight_layout()
    return _figure_data_url(fig)


def plot_agreement(metrics: dict[str, Any]) -> str:
    """Cohen's kappa with the teacher labels: student and baseline per criterion."""
    plt = _pyplot()
    names = columns(metrics)
    series = [("student vs teacher", _COLOURS["student"], lambda m: (m.get("student") or {}).get("kappa")),
              ("baseline vs teacher", _COLOURS["baseline"], lambda m: (m.get("baseline") or {}).get("kappa"))]
    if any(metrics[n].get("vs_truth") for n in names):
        series.append(("teacher vs truth", _COLOURS["teacher"],
                       lambda m: ((m.get("vs_truth") or {}).get("teacher") or {}).get("kappa")))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for k, (who, colour, get) in enumerate(series):
        vals = [get(metrics[n]) for n in names]
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [v or 0.0 for v in vals], width, label=who, color=colour)
        for x, v in zip(xs, vals):
            ax.text(x, max(v or 0.0, 0.0) + 0.02, "–" if v is None else f"{v:.2f}", ha="center", fontsize=7)
    ax.axhline(0, color="#444", lw=0.8)
    ax.set_xticks(range(len(names)), [metrics[n].get("display", n) for n in names])
    ax.set_ylim(-1, 1.35)
    ax.set_ylabel("Cohen's kappa")
    ax.legend(fontsize=8, loc="upper center", ncol=len(series), frameon=False)
    fig.tight_layout()
    return _figure_data_url(fig)


def plot_calibration(metrics: dict[str, Any]) -> Optional[str]:
    """Reliability diagram of p(out-of-context) per criterion; None when no answer has a probability."""
    curves = {n: metrics[n].get("calibration") for n in metrics.get("criteria", []) if metrics.get(n, {}).get("calibration")}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], ls="--", color="#888", lw=1, label="perfect")
    for name, cal in curves.items():
        pts = [(b["mean_p_out"], b["observed_out"]) for b in cal["bins"] if b["n"]]
        ax.plot([p for p, _ in pts], [o for _, o in pts], marker="o",
                label=f"{metrics[name].get('display', name)} (ECE {cal['ece']:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted p(out-of-context)")
    ax.set_ylabel("observed share out-of-context (teacher)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _figure_data_url(fig)


def plot_shortcut(shortcut: dict[str, Any]) -> Optional[str]:
    shares = shortcut.get("in_context_share") or {}
    if not shares:
        return None
    plt = _pyplot()
    names = sorted(shares, key=_canonical)
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    vals = [shares[n] or 0.0 for n in names]
    thr = shortcut.get("threshold", 0.95)
    ax.bar(names, vals, color=["#3a9a5b" if v >= thr else "#c0392b" for v in vals])
    for i, v in enumerate(vals):
        ax.text(i, v + 0.01, f"{100 * v:.0f} %", ha="center", fontsize=8)
    ax.axhline(thr, ls="--", color="#333", lw=1)
    ax.text(-0.45, thr + 0.06, f"robust ≥ {100 * thr:.0f} %", ha="left", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("in-context share on unmodified images")
    fig.tight_layout()
    return _figure_data_url(fig)


def headline_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the headline table, one per criterion (and fused): student accuracy with its 95 %
    interval and the majority-class rate, balanced accuracy, macro-F1 — vs the teacher labels
    and vs the truth — then the untrained baseline's, F1 (out) and the unparseable count."""
    rows = []
    for name in columns(metrics):
        m = metrics[name]
        row: dict[str, Any] = {"criterion": name, "n": m.get("n")}
        for suffix in ("", "_vs_truth"):
            for prefix in ("", "baseline_", "probe_", "teacher_"):
                row.update({(k := headline_key(key, prefix, suffix)): m.get(k) for key in HEADLINE_KEYS})
        row.update({"f1_out": m.get("f1_out"), "unparseable": m.get("unparseable")})
        rows.append(row)
    return rows


def headline_cells(row: dict[str, Any], suffix: str = "") -> list[str]:
    """Formatted cells of one reference (``suffix`` "" or "_vs_truth"): accuracy [95 % CI],
    majority rate, balanced accuracy [95 % CI], macro-F1, baseline accuracy [95 % CI], baseline
    balanced accuracy (the page's headline; the CLI prints a narrower set)."""
    g = lambda key, prefix="": headline_value(row, key, prefix, suffix)  # noqa: E731
    return [pct_ci(g("accuracy"), g("accuracy_ci95")), _pct(g("majority_rate")),
            pct_ci(g("balanced_accuracy"), g("balanced_accuracy_ci95")), _num(g("macro_f1")),
            pct_ci(g("accuracy", "baseline_"), g("accuracy_ci95", "baseline_")),
            _pct(g("balanced_accuracy", "baseline_"))]


#: Header of :func:`headline_cells`.
HEADLINE_HEADER = ("accuracy [95 % CI]", "majority rate", "balanced acc [95 % CI]", "macro-F1",
                   "untrained base (floor) acc [95 % CI]", "untrained base (floor) balanced acc")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img(url: Optional[str], alt: str, missing: str) -> str:
    if not url:
        return f'<p class="muted">{_esc(missing)}</p>'
    return f'<img class="plot" alt="{_esc(alt)}" src="{url}">'


def _summary_html(metrics: dict[str, Any]) -> str:
    """One row per criterion: every number vs the teacher labels, then vs the truth when known."""
    rows = headline_rows(metrics)
    has_truth = any(r.get("accuracy_vs_truth") is not None for r in rows)
    refs = [("", "vs teacher")] + ([("_vs_truth", "vs truth")] if has_truth else [])
    body = [[_esc(r["criterion"]), r["n"], *(_esc(c) for suffix, _ in refs for c in headline_cells(r, suffix)),
             _num(r["f1_out"]), r["unparseable"]] for r in rows]
    header = ["criterion", "n", *(f"{h} ({ref})" for _, ref in refs for h in HEADLINE_HEADER), "F1 (out)", "unparseable"]
    return _table(header, body, "headline") + _references_html(metrics, rows)


def _references_html(metrics: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """The students beside what they are measured against, in balanced accuracy against the truth
    (the teacher labels when no truth is known): the untrained base (a floor), the linear probe on
    the frozen base's features (the informative baseline, when run) and the designated teacher."""
    suffix = "_vs_truth" if any(r.get("accuracy_vs_truth") is not None for r in rows) else ""
    probe = any(r.get(f"probe_balanced_accuracy{suffix}") is not None for r in rows)
    header = ["criterion", "student", "untrained base (floor)", "majority class"]
    header += (["linear probe on the frozen base"] if probe else []) + (["designated teacher"] if suffix else [])
    body = []
    for r in rows:
        g = lambda key, prefix="": headline_value(r, key, prefix, suffix)  # noqa: E731
        cells = [_esc(r["criterion"]), pct_ci(g("balanced_accuracy"), g("balanced_accuracy_ci95")),
                 _pct(g("balanced_accuracy", "baseline_")), _pct(g("majority_rate"))]
        cells += [pct_ci(g("balanced_accuracy", "probe_"), g("balanced_accuracy_ci95", "probe_"))] if probe else []
        cells += [_pct(g("balanced_accuracy", "teacher_"))] if suffix else []
        body.append(cells)
    ref = "the truth" if suffix else "the teacher labels"
    note = (f'<p class="muted">Balanced accuracy against {ref}. The untrained base answers about one label: a floor, '
            "not a baseline. The linear probe (logistic regression on the frozen base's hidden states, fitted on the "
            "training split's teacher labels) shows what the base's features already carry; a student above it learned "
            "more than a linear read-out of them. The teacher's own labels are what the students learn from.</p>")
    return "<h3>Against what</h3>" + _table(header, body, "references") + note


def _reasoning_html(metrics: dict[str, Any]) -> str:
    rows = []
    for name in metrics.get("criteria", []):
        r = metrics[name].get("reasoning") or {}
        rows.append([_esc(name), _pct(r.get("consistent_share")), _pct(r.get("consistent_share_of_cued")),
                     r.get("inconsistent", "–"), r.get("neutral", "–"), r.get("no_analysis", "–"),
                     _pct(r.get("teacher_consistent_share")), _num(r.get("rouge_l"))])
    return _table(["criterion", "consistent", "consistent (cued only)", "inconsistent", "neutral", "no analysis",
                   "teacher consistent (rule check)", "ROUGE-L vs teacher"], rows)


#: (metrics key suffix, column title) of the calibration table
CALIBRATION_REFERENCES = (("", "teacher label"), ("_vs_truth", "truth"), ("_vs_teacher_p", "teacher P(out)"))


def _calibration_html(metrics: dict[str, Any]) -> str:
    """ECE and Brier score of each student's p(out) against each reference it has, and the
    teacher's own probabilities against the truth; empty when no answer had a probability."""
    names = [n for n in metrics.get("criteria", []) if (metrics.get(n) or {}).get("calibration")]
    if not names:
        return ""
    refs = [(suffix, title) for suffix, title in CALIBRATION_REFERENCES
            if any(metrics[n].get(f"ece{suffix}") is not None for n in names)]
    teacher = any(metrics[n].get("teacher_ece_vs_truth") is not None for n in names)
    rows = []
    for n in names:
        m = metrics[n]
        block = m.get("calibration") or {}
        row = [_esc(m.get("display", n)), block.get("n", "–")]
        for suffix, _ in refs:
            row += [_num(m.get(f"ece{suffix}")), _num(m.get(f"brier{suffix}"))]
        if teacher:
            row += [_num(m.get("teacher_ece_vs_truth")), _num(m.get("teacher_brier_vs_truth"))]
        rows.append(row)
    header = ["criterion", "n"] + [f"{k} (vs {title})" for _, title in refs for k in ("ECE", "Brier")]
    if teacher:
        header += ["teacher ECE (vs truth)", "teacher Brier (vs truth)"]
    bins = len((metrics[names[0]].get("calibration") or {}).get("bins") or []) or "–"
    return (_table(header, rows, "calibration")
            + f'<p class="muted">Student p(out-of-context) at the decision token; ECE over {bins} equal-width bins of '
            "p (count-weighted |reference − mean p|), Brier = mean (p − reference)²; lower is better for both. "
            "Against the teacher's P(out), the reference is that probability rather than a 0/1 label.</p>")


def _errors_html(metrics: dict[str, Any]) -> str:
    parts = []
    for name in columns(metrics):
        m = metrics[name]
        for key, title in (("errors_by_object", "object category"), ("errors_by_scene", "scene")):
            groups = [g for g in m.get(key) or [] if g["errors"]]  # metrics.json keeps the error-free ones too
            if not groups:
                continue
            rows = [[_esc(g["key"]), g["n"], g["errors"], _pct(g["error_rate"]), g["unparseable"],
                     _esc("; ".join(f"{k}: {v}" for k, v in g["confusions"].items()))] for g in groups]
            parts.append(f'<div class="block"><h3>{_esc(m.get("display", name))} — by {title}</h3>'
                         + _table([title, "n", "errors", "error rate", "unparseable", "confusions"], rows, "errors")
                         + "</div>")
    return ('<div class="blocks">' + "".join(parts) + "</div>") if parts else '<p class="muted">No errors.</p>'


def _shortcut_html(shortcut: dict[str, Any]) -> str:
    if not shortcut.get("available"):
        return f'<p class="muted">Not run: {_esc(shortcut.get("reason", "no unmodified images given"))}.</p>'
    thr = shortcut.get("threshold", 0.95)
    rows = []
    shares = shortcut.get("in_context_share") or {}
    recall = shortcut.get("recall_out_on_split") or {}
    ref = shortcut.get("recall_reference") or {}
    for name in sorted(shares, key=_canonical):
        share = shares[name]
        d = (shortcut.get("details") or {}).get(name, {})
        verdict = (shortcut.get("verdict") or {}).get(name) or ("robust" if share is not None and share >= thr
                                                                else "shortcut suspected")
        rows.append([_esc(name), d.get("n", "–"), _pct(share), d.get("unparseable", "–"),
                     _pct(recall.get(name)) + (f" (vs {_esc(ref[name])})" if ref.get(name) else ""), _esc(verdict)])
    sel = shortcut.get("selection") or {}
    chosen = (f" — of {sel['given']} originals, the {sel['used']} whose scene is in the evaluated split (unseen in training)"
              if sel.get("unseen_scenes_only") else (f" — {_esc(sel['reason'])}" if sel.get("reason") else ""))
    return (f"<p>{shortcut.get('n', 0)} unmodified images ({_esc(shortcut.get('source', ''))}){chosen}, each boxing an "
            f"object that belongs there: every answer should be in-context. Reference: ≥ {100 * thr:.0f} % in-context "
            f"is robust when the student also finds ≥ {100 * shortcut.get('min_recall', 0.5):.0f} % of the out-of-context "
            "samples of the evaluated split (its Out recall): a student answering In to everything passes the share alone "
            "(uninformative).</p>"
            + _table(["criterion", "n", "in-context share", "unparseable", "Out recall on the split", "verdict"], rows)
            + _img(plot_shortcut(shortcut), "shortcut test", ""))


def _clip(text: Optional[str], n: int = 240) -> Optional[str]:
    """A long (e.g. rambling, unparseable) answer cut for the gallery card."""
    if text is None or len(text) <= n:
        return text
    return text[:n] + " …"


def _gallery_html(gallery: Sequence[dict[str, Any]]) -> str:
    if not gallery:
        return '<p class="muted">No errors to show.</p>'
    cards = []
    for g in gallery:
        thumb = (f'<img class="thumb" alt="{_esc(g["id"])}" src="{g["thumbnail"]}">' if g.get("thumbnail")
                 else f'<p class="muted">image unavailable: {_esc(g.get("image_error"))}</p>')
        conf = "" if g.get("confidence") is None else f" (p = {g['confidence']:.2f})"
        cards.append(
            f'<figure class="card">{thumb}<figcaption>'
            f'<b>{_esc(g["criterion"])}</b> · {_esc(g["id"])} · {_esc(g.get("object"))} in {_esc(g.get("scene"))}<br>'
            f'<span class="bad">student: {_esc(g.get("student_label") or "unparseable")}{conf}</span> — '
            f'{_esc(_clip(g.get("student_analysis") or g.get("student_raw")))}<br>'
            f'<span class="good">teacher: {_esc(g.get("teacher_label"))}</span> — {_esc(g.get("teacher_analysis"))}'
            + (f'<br>truth: {_esc(g["truth"])}' if g.get("truth") else "")
            + "</figcaption></figure>"
        )
    return '<div class="gallery">' + "".join(cards) + "</div>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} section{margin:2em 0} .muted{color:#777}
.synthetic{background:#fff3cd;border:2px solid #e0a800;padding:.8em 1em;font-weight:bold;font-size:1.1em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f2f2f2} td:first-child{text-align:left} img.plot{max-width:100%;display:block;margin:.5em 0}
table.headline{display:block;overflow-x:auto} table.headline td{white-space:nowrap}
.gallery{display:flex;flex-wrap:wrap;gap:1em}
.card{width:280px;margin:0;border:1px solid #ddd;padding:.5em;font-size:.85em;overflow-wrap:anywhere}
.card img{width:100%;image-rendering:pixelated}
.blocks{display:flex;flex-wrap:wrap;gap:0 2em} table.errors td:last-child{text-align:left} .bad{color:#b03030;font-weight:bold} .good{color:#2a7a3b;font-weight:bold}
"""


def render_html(metrics: dict[str, Any], gallery: Sequence[dict[str, Any]] = ()) -> str:
    """The report page as one self-contained HTML string."""
    synthetic = bool(metrics.get("synthetic"))
    notice = f'<p class="synthetic" id="synthetic-notice">{_esc(SYNTHETIC_NOTICE)}</p>' if synthetic else ""
    conv = metrics.get("conventions") or {}
    sections = {
        "summary": ("Headline", _summary_html(metrics)
                    + f'<p class="muted">Split {_esc(metrics.get("split"))}; students {_esc(metrics.get("students"))}; '
                    f'base {_esc(metrics.get("base_model") or "–")}; teacher = the dataset labels (100 % against itself).</p>'),
        "confusion": ("Confusion matrices", _img(plot_confusions(metrics), "confusion matrices", "")),
        "comparison": ("Student vs untrained base (floor) vs teacher", _img(plot_comparison(metrics), "accuracy comparison", "")),
        "agreement": ("Agreement with the teacher", _img(plot_agreement(metrics), "kappa", "")),
        "calibration": ("Calibration", _calibration_html(metrics) + _img(plot_calibration(metrics), "reliability diagram",
                                                                       "No probabilities in the answers: no calibration plot.")),
        "reasoning": ("Reasoning", _reasoning_html(metrics)
                      + f'<p class="muted">Consistency rule: {_esc(metrics.get("reasoning_rule"))}</p>'),
        "errors": ("Errors by object category and scene", _errors_html(metrics)),
        "shortcut": ("Shortcut test (unmodified images)", _shortcut_html(metrics.get("shortcut") or {})),
        "gallery": ("Worst errors", _gallery_html(gallery)),
        "method": ("How the numbers are made", "<ul>" + "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>"
                                                                 for k, v in conv.items()) + "</ul>"),
    }
    body = "".join(f'<section id="{sid}"><h2>{_esc(title)}</h2>{content}</section>'
                   for sid, (title, content) in ((s, sections[s]) for s in SECTION_IDS))
    title = "scenefit evaluation" + (" — SYNTHETIC" if synthetic else "")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>{notice}{body}{notice}</body></html>\n")


def write_report(metrics: dict[str, Any], out_dir: Path | str, gallery: Sequence[dict[str, Any]] = ()) -> tuple[Path, Path]:
    """Write OUT/metrics.json and OUT/report.html; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(metrics, out / "metrics.json")
    html_path = out / "report.html"
    atomic_write_text(render_html(metrics, gallery), html_path)
    return json_path, html_path


def thumbnail_data_url(image: Any, box: Optional[Sequence[float]], boxed: bool, max_px: int) -> str:
    """A PNG data URL of an image (a path, or one embedded in a dataset row), shrunk to ``max_px``
    on its longer side, with its red box drawn when the file does not already carry it."""
    from scenefit.core.images import draw_box, load_stored_image, png_data_url

    im = load_stored_image(image)
    if box is not None and not boxed:
        im = draw_box(im, box)  # the one width rule, as the students saw it
    im.thumbnail((max_px, max_px))
    return png_data_url(im)
