"""The consensus report as Rich tables (what `scenefit consensus` prints): rules and samples
kept, teacher agreement (Cohen's and Fleiss' kappa), answers per teacher, and label accuracy
against the truth when the data has it. The report itself is built by :mod:`scenefit.data.consensus`."""

from __future__ import annotations

from scenefit.data.consensus import FIELDS


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def report_tables(report: dict) -> list:
    """Rich tables of a consensus report: rules, agreement, teacher statuses, accuracy."""
    from rich.table import Table

    tables = []
    t = Table(title=f"Consensus — samples kept per rule (applied: {report['rule']}, "
              f"{report['samples']['manifest']} samples, teachers: {', '.join(report['teachers'])})")
    acc = report.get("accuracy")
    for col in ("rule", "kept", "share", "in", "out") + (("final acc. vs truth",) if acc else ()):
        t.add_column(col, justify="left" if col == "rule" else "right")
    for rule, r in report["kept_per_rule"].items():
        mark = " *" if rule == report["rule"] else ""
        row = [rule + mark, str(r["kept"]), _fmt(r["share"]), str(r["in_context"]), str(r["out_of_context"])]
        if acc:
            row.append(_fmt(acc["after"][rule]["final"]["accuracy"]))
        t.add_row(*row)
    tables.append(t)

    t = Table(title="Teacher agreement (on samples where all teachers have a label)")
    for col in ("field", "all agree", "n", "Fleiss κ", "Cohen κ (pairs)"):
        t.add_column(col, justify="left" if col in ("field", "Cohen κ (pairs)") else "right")
    for f, a in report["agreement"].items():
        pairs = ", ".join(f"{p['a']}/{p['b']} {_fmt(p['kappa'], 2)}" for p in a["cohen"])
        t.add_row(f, _fmt(a["rate"]), str(a["n"]), _fmt(a["fleiss_kappa"]), pairs)
    tables.append(t)

    t = Table(title="Answers per teacher")
    t.caption = ("derived finals: no final decision written, fused from the three labels; "
                 + ("counted as votes" if report.get("count_derived_final") else "no vote (count_derived_final: false)"))
    for col in ("teacher", "answers", "usable", "parse failures", "request failures", "missing", "derived finals",
                "statuses"):
        t.add_column(col, justify="left" if col in ("teacher", "statuses") else "right")
    for name, s in report["teacher_status"].items():
        t.add_row(name, str(s["answers"]), str(s["usable"]), str(s["parse_failures"]),
                  str(s["request_failures"]), str(s["missing"]), str(s.get("derived_final", 0)),
                  ", ".join(f"{k} {v}" for k, v in s["status"].items()))
    tables.append(t)

    if acc:
        t = Table(title=f"Label accuracy vs truth — before: {acc['before']['teacher']} alone on all samples; "
                  f"after: {report['rule']} consensus on kept samples")
        for col in ("field", "before", "n", "after", "n"):
            t.add_column(col, justify="left" if col == "field" else "right")
        after = acc["after"][report["rule"]]
        for f in FIELDS:
            b, a = acc["before"][f], after[f]
            t.add_row(f, _fmt(b["accuracy"]), str(b["n"]), _fmt(a["accuracy"]), str(a["n"]))
        tables.append(t)
    return tables
