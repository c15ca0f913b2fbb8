"""Test helpers first written for tests/unit/test_soft_labels.py, shared by other tests."""

from __future__ import annotations

import math

from scenefit.teachers.label_probs import TokenChoice


def tokens_of(text: str, probs: dict[str, float], k: int = 5) -> list[TokenChoice]:
    """A crude tokenizer (' Word', punctuation, newlines) with alternatives at every label token
    (an In/Out word followed by '-', or a bare one ending its line): ``probs[field]`` is P(out) there, the field being named by
    the words before it on its line (location, size, co-occurrence, final decision; JSON keys
    too). Other tokens are certain. Independent of the library's own label locator."""
    import re

    pieces = re.findall(r" ?[A-Za-z]+|\n|[^A-Za-z\n]", text)
    out, pos = [], 0
    for n, piece in enumerate(pieces):
        word = piece.strip()
        key = None
        after = pieces[n + 1] if n + 1 < len(pieces) else "\n"
        if word.lower() in ("in", "out") and after in ("-", "\n", "."):  # a label, or a bare final one
            before = text[: pos].rsplit("\n", 1)[-1].lower()
            before = before.rsplit(",", 1)[-1]  # JSON on one line: the key just before
            names = {"final": "final", "co-occurrence": "co_occurrence", "co_occurrence": "co_occurrence",
                     "location": "location", "size": "size"}
            hits = [(before.rfind(w), f) for w, f in names.items() if w in before]
            key = max(hits)[1] if hits else None
        if key in probs:
            p = probs[key]
            lead = piece[: len(piece) - len(piece.lstrip())]
            out_tok, in_tok = lead + ("out" if word.islower() else "Out"), lead + ("in" if word.islower() else "In")
            alts = sorted([(out_tok, math.log(p) if p > 0 else -math.inf), (in_tok, math.log(1 - p) if p < 1 else -math.inf),
                           (lead + "**", math.log(1e-3))], key=lambda a: -a[1])[:k]
            out.append(TokenChoice(piece, dict(alts).get(piece, -1.0), tuple(alts)))
        else:
            out.append(TokenChoice(piece, 0.0, ((piece, 0.0),)))
        pos += len(piece)
    return out

