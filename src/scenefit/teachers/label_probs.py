"""A teacher's probability of Out-of-context at each label it wrote, read from its token log-probabilities.

    scenefit annotate MANIFEST --db annotations.sqlite --config paper   # openai / transformers teachers

    from scenefit.teachers.label_probs import TokenChoice, p_out_from_tokens
    p_out, note = p_out_from_tokens([TokenChoice(" Out", -0.1, ((" Out", -0.1), (" In", -2.4))), ...])

The answer is the concatenation of its tokens. In that text the label of each criterion (the last
``<Criterion>: <label>`` the answer states — the Summary line, which follows the Analysis) and
of the final decision are found; the token where the label starts is the decision token (` In`
or ` Out` in Qwen's vocabulary). Its alternatives (the chosen token and the ``top_logprobs``)
are sorted into In-context (`In`, `in`, `In-context` …) and Out-of-context (`Out`, `out` …)
by the text they put at the label's position, and ``P(out) = mass(out) / (mass(in) + mass(out))``
— renormalised over the two labels, whatever else (markdown, other words) holds the rest of the
mass. When only one label is among the alternatives the probability is 0 or 1.

A value is None, with a short reason in the note, when: the answer states no label for it (or
the parser reads another label than the one found), the final decision was not written, the
label's token is not found, no alternatives came with it, or none of them is a label. Both text
answers and the JSON variant are read.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from scenefit.core.criteria import CRITERIA, Label
from scenefit.teachers.parse import _CRIT_ALT, _FINAL_RE, _NAME_TO_CRITERION, parse_teacher_answer
from scenefit.teachers.store import P_OUT_KEYS

#: A label phrase as written in an answer (any case, '-', '_' or ' ' between the words).
_LABEL = r"out[\s_-]*of[\s_-]*context|in[\s_-]*context"
#: "<Criterion>: <label>" anywhere (lines, one-line summaries, bold, JSON keys and values).
_CRITERION_LABEL = re.compile(
    rf"(?P<name>{_CRIT_ALT})[\s*_`\"']*(?::|\s[-–—]\s|=)[\s*_`\"']*(?P<label>{_LABEL})\b", re.IGNORECASE
)
#: The JSON variant's final decision ("final_decision": "Out-of-context").
_JSON_FINAL = re.compile(rf"final[\s_-]*decision[\s\"']*:[\s\"']*(?P<label>{_LABEL})\b", re.IGNORECASE)


@dataclass(frozen=True)
class TokenChoice:
    """One generated token: its text, its log-probability and the alternatives at its position
    (``(token, logprob)`` pairs, best first; the chosen token may be among them)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


def label_offsets(text: str) -> dict[str, tuple[int, str]]:
    """Per field (criterion value or ``final``): (offset of the label's first character, the
    label as written), for the last label the answer states for it."""
    found: dict[str, tuple[int, str]] = {}
    for m in _CRITERION_LABEL.finditer(text):
        c = _NAME_TO_CRITERION.get(re.sub(r"\s+", " ", m.group("name").lower()))
        if c is not None:
            found[c.value] = (m.start("label"), m.group("label"))
    finals = [(m.start(1), m.group(1)) for m in _FINAL_RE.finditer(text)]
    finals += [(m.start("label"), m.group("label")) for m in _JSON_FINAL.finditer(text)]
    if finals:
        found["final"] = max(finals)
    return found


def _side(rest: str) -> Optional[Label]:
    """Which label an alternative token starts at the label position (None: neither)."""
    r = re.sub(r"[\s_]+", "-", rest.strip().lower())
    if not r:
        return None
    for label, words in ((Label.OUT, "out-of-context"), (Label.IN, "in-context")):
        if words.startswith(r) or r.startswith(words) or r == words.split("-")[0]:
            return label
    return None


def p_out_at(tokens: Sequence[TokenChoice], starts: Sequence[int], offset: int) -> tuple[Optional[float], Optional[str]]:
    """P(Out-of-context) from the token holding character ``offset`` (None and why otherwise)."""
    import bisect

    i = bisect.bisect_right(starts, offset) - 1
    if i < 0 or i >= len(tokens):
        return None, "no label token"
    tok = tokens[i]
    pre = tok.token[: offset - starts[i]]
    if _side(tok.token[len(pre):]) is None:
        return None, "no label token"
    if not tok.top:
        return None, "no top_logprobs"
    mass = {Label.IN: 0.0, Label.OUT: 0.0}
    seen = set()
    for text, lp in ((tok.token, tok.logprob), *tok.top):
        if text in seen or lp is None or not text.startswith(pre):
            continue
        seen.add(text)
        side = _side(text[len(pre):])
        if side is not None and math.isfinite(lp):
            mass[side] += math.exp(lp)
    total = mass[Label.IN] + mass[Label.OUT]
    if total <= 0.0:
        return None, "no In/Out among the alternatives"
    return mass[Label.OUT] / total, None


def p_out_from_tokens(tokens: Sequence[TokenChoice]) -> tuple[dict[str, Optional[float]], Optional[str]]:
    """(P(out) per field of :data:`P_OUT_KEYS`, a note naming why any is None — None when all are known)."""
    text = "".join(t.token for t in tokens)
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t.token)
    parse = parse_teacher_answer(text)
    stated = {c.value: parse.labels.get(c) for c in CRITERIA}
    stated["final"] = None if parse.final_derived else parse.final
    where = label_offsets(text)
    out: dict[str, Optional[float]] = {}
    why: dict[str, str] = {}
    for key in P_OUT_KEYS:
        if stated[key] is None:
            out[key], why[key] = None, "no final decision written" if key == "final" and parse.final_derived else "no label"
            continue
        if key not in where or Label.parse(where[key][1]) is not stated[key]:
            out[key], why[key] = None, "label position not found"
            continue
        p, problem = p_out_at(tokens, starts, where[key][0])
        out[key] = None if p is None else round(p, 6)
        if problem:
            why[key] = problem
    return out, _note(why)


def _note(why: dict[str, str]) -> Optional[str]:
    """"size, final: no label token; location: no label" — fields grouped by reason."""
    if not why:
        return None
    by_reason: dict[str, list[str]] = {}
    for key, reason in why.items():
        by_reason.setdefault(reason, []).append(key)
    return "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())


def no_p_out(note: str) -> tuple[dict[str, Optional[float]], str]:
    """Every field unknown, for one reason (the server sent no logprobs, …)."""
    return {k: None for k in P_OUT_KEYS}, note


def tokens_from_openai(logprobs: Any) -> Optional[list[TokenChoice]]:
    """The tokens of an OpenAI chat-completions ``choices[i].logprobs`` object
    (``{"content": [{"token", "logprob", "top_logprobs": [{"token", "logprob"}, …]}, …]}``), or
    None when it holds none."""
    if not isinstance(logprobs, dict) or not isinstance(logprobs.get("content"), list) or not logprobs["content"]:
        return None
    out = []
    for entry in logprobs["content"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        top = tuple(
            (alt["token"], float(alt["logprob"])) for alt in entry.get("top_logprobs") or []
            if isinstance(alt, dict) and isinstance(alt.get("token"), str) and isinstance(alt.get("logprob"), (int, float))
        )
        lp = entry.get("logprob")
        out.append(TokenChoice(entry["token"], float(lp) if isinstance(lp, (int, float)) else float("nan"), top))
    return out


#: What a log-probability of zero probability is sent as (JSON has no -Infinity; vLLM's value).
NO_CHANCE_LOGPROB = -9999.0


def openai_logprobs_content(tokens: Sequence[TokenChoice]) -> list[dict[str, Any]]:
    """Tokens in the OpenAI ``logprobs.content`` shape (what ``scenefit serve-teacher`` answers);
    a log-probability that is not finite is sent as :data:`NO_CHANCE_LOGPROB`."""
    def entry(token: str, lp: float) -> dict[str, Any]:
        lp = float(lp) if math.isfinite(lp) else NO_CHANCE_LOGPROB
        return {"token": token, "logprob": lp, "bytes": list(token.encode("utf-8"))}

    return [{**entry(t.token, t.logprob), "top_logprobs": [entry(a, lp) for a, lp in t.top]} for t in tokens]
