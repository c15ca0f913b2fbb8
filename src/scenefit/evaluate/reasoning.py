"""Reasoning metrics: does the analysis sentence argue for the label it comes with, and how
close is it to the teacher's sentence (ROUGE-L)?

The consistency rule (documented here and in the report)
--------------------------------------------------------
A sentence's *stance* is read from cue phrases:

- out-of-context cues: floats / hangs / hovers, in the sky / in the air / mid-air, embedded,
  pasted, nothing holding, too large / too small / too big / oversized / undersized / out of
  proportion / far larger / much smaller…, unusual, unlikely, implausible, out of place, odd,
  strange, unexpected, impossible, would not / cannot / can't, unsupported;
- in-context cues: stands / rests / sits / lies / parked / held up, on the (ground, floor, sand,
  grass, …), flies (and flies in the sky, one cue), fits, typical, normal, usual, common, plausible, natural, expected,
  belongs, found, appropriate, consistent, matches, realistic, reasonable, in proportion,
  supported, about right.

A cue preceded (within four words, same clause) by a negator (not, n't, no, never, hardly) counts for the
other side: "does not belong" is an out-of-context cue, "not unusual" an in-context one. The
stance is the side with more cues; equal counts (including none) are *neutral*. An answer is
*consistent* when its label equals the stance, *inconsistent* when it is the opposite, and
*neutral* otherwise. Neutral sentences are neither: ``consistent_share`` divides consistent
answers by all answers with a label (neutral and missing sentences count as not shown to be
consistent); ``consistent_share_of_cued`` divides by consistent + inconsistent.

The rule is a lexicon, not a judge: the same rule is applied to the teacher's own sentences
(``teacher_consistent_share``) so a reader can see how far the lexicon itself can be trusted.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Optional, Sequence

from scenefit.core.criteria import Label
from scenefit.evaluate.metrics import as_label

_OUT_CUES = [
    r"float(?:s|ing)?", r"hang(?:s|ing)?", r"hover(?:s|ing)?", r"in (?:the )?(?:sky|air)", r"mid-?air",
    r"embedded", r"pasted", r"nothing holding", r"(?:too|overly) (?:large|small|big|tiny|huge|little)",
    r"oversized", r"undersized", r"out of (?:proportion|scale|place)", r"(?:far|much|way) (?:larger|smaller|bigger)",
    r"disproportionate(?:ly)?", r"unusual(?:ly)?", r"unlikely", r"implausibl[ey]", r"odd", r"strange(?:ly)?",
    r"unexpected(?:ly)?", r"impossible", r"would not", r"wouldn't", r"cannot", r"can't", r"unsupported",
    r"unnatural(?:ly)?", r"unrealistic(?:ally)?", r"misplaced",
]
_IN_CUES = [
    r"stand(?:s|ing)?", r"rest(?:s|ing)?", r"sit(?:s|ting)?", r"lies", r"lying", r"parked", r"held up",
    r"on the (?:ground|floor|road|street|grass|sand|snow|asphalt|carpet|table|counter|shelf|track)",
    r"fl(?:y|ies|ying) (?:\w+ )?in the (?:sky|air)", r"fl(?:y|ies|ying)", r"fit(?:s|ting)?", r"typical(?:ly)?", r"normal(?:ly)?", r"usual(?:ly)?",
    r"common(?:ly)?", r"plausibl[ey]", r"natural(?:ly)?", r"expected", r"belong(?:s|ing)?", r"found",
    r"appropriate(?:ly)?", r"consistent", r"match(?:es|ing)?", r"realistic(?:ally)?", r"reasonable",
    r"in proportion", r"supported", r"proportionate", r"about right",
]
_NEGATOR = re.compile(r"\b(?:not|no|never|hardly|nor)\b|n't\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _cue_regex() -> re.Pattern:
    alts = [f"(?P<o{i}>{c})" for i, c in enumerate(_OUT_CUES)] + [f"(?P<i{i}>{c})" for i, c in enumerate(_IN_CUES)]
    return re.compile(r"\b(?:" + "|".join(alts) + r")\b", re.IGNORECASE)


def _negated(text: str, start: int) -> bool:
    clause = re.split(r"[;,.:!?]|\bbut\b", text[:start])[-1]  # a negation does not cross a clause
    window = clause.split()[-4:]
    return bool(window) and bool(_NEGATOR.search(" ".join(window)))


def cue_counts(sentence: Optional[str]) -> tuple[int, int]:
    """(out-of-context cues, in-context cues) in a sentence, negation flipping a cue's side."""
    text = sentence or ""
    n_out = n_in = 0
    for m in _cue_regex().finditer(text):
        side_out = m.lastgroup.startswith("o")
        phrase = m.group(0).lower()
        # "would not" / "cannot" carry their own negation: never flipped by it
        if not phrase.startswith(("would", "can")) and _negated(text, m.start()):
            side_out = not side_out
        if side_out:
            n_out += 1
        else:
            n_in += 1
    return n_out, n_in


#: One line on the rule, written into metrics.json and the report.
RULE_SUMMARY = (
    "out-of-context cues (floats, hangs, in the sky, too large, unusual, out of place, would not, ...) vs "
    "in-context cues (stands, rests, on the ground, flies in the sky, fits, typical, normal, plausible, ...); a "
    "negator (not, n't, no, never) within four words of the same clause flips a cue; the side with more cues is "
    "the stance, a tie is neutral"
)


def stance(sentence: Optional[str]) -> Optional[Label]:
    """The label a sentence argues for by the cue rule; None when neutral (no cue or a tie)."""
    n_out, n_in = cue_counts(sentence)
    if n_out > n_in:
        return Label.OUT
    if n_in > n_out:
        return Label.IN
    return None


def consistency(label: Any, sentence: Optional[str]) -> str:
    """"consistent", "inconsistent", "neutral", "no_analysis" or "no_label" for one answer."""
    lab = as_label(label)
    if lab is None:
        return "no_label"
    if not sentence or not str(sentence).strip():
        return "no_analysis"
    st = stance(sentence)
    if st is None:
        return "neutral"
    return "consistent" if st is lab else "inconsistent"


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(candidate: Optional[str], reference: Optional[str]) -> Optional[float]:
    """ROUGE-L F-measure of two sentences (stemmed); None when the reference is missing,
    0.0 when only the candidate is."""
    if not reference or not str(reference).strip():
        return None
    if not candidate or not str(candidate).strip():
        return 0.0
    return float(_scorer().score(str(reference), str(candidate))["rougeL"].fmeasure)


def reasoning_metrics(
    labels: Sequence[Any], analyses: Sequence[Optional[str]], teacher_labels: Sequence[Any],
    teacher_analyses: Sequence[Optional[str]],
) -> dict[str, Any]:
    """Consistency counts and shares (rule above) and mean ROUGE-L vs the teacher's sentences.

    ``rouge_l`` averages over rows with a teacher sentence, a missing student sentence scoring
    0; ``rouge_l_answered`` averages over rows where both sentences exist.
    """
    verdicts = [consistency(lab, a) for lab, a in zip(labels, analyses)]
    counts = {k: verdicts.count(k) for k in ("consistent", "inconsistent", "neutral", "no_analysis", "no_label")}
    labelled = len(verdicts) - counts["no_label"]
    cued = counts["consistent"] + counts["inconsistent"]
    teacher = [consistency(lab, a) for lab, a in zip(teacher_labels, teacher_analyses)]
    t_labelled = sum(1 for v in teacher if v != "no_label")
    scores = [rouge_l(a, t) for a, t in zip(analyses, teacher_analyses)]
    scored = [s for s in scores if s is not None]
    answered = [s for s, a in zip(scores, analyses) if s is not None and a and str(a).strip()]
    return {
        **counts,
        "consistent_share": counts["consistent"] / labelled if labelled else None,
        "consistent_share_of_cued": counts["consistent"] / cued if cued else None,
        "teacher_consistent_share": teacher.count("consistent") / t_labelled if t_labelled else None,
        "rouge_l": sum(scored) / len(scored) if scored else None,
        "rouge_l_answered": sum(answered) / len(answered) if answered else None,
        "rule": "cue lexicon with negation; see scenefit.evaluate.reasoning",
    }
