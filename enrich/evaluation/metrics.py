"""Text metrics of `enrich eval`: ROUGE-L (rouge-score), chrF and BLEU (sacrebleu), length, termination, flags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from enrich.errors import EngineError
from enrich.quality.flags import FLAGS


def _libraries() -> tuple[Any, Any]:
    try:
        import sacrebleu
        from rouge_score import rouge_scorer
    except ImportError:
        raise EngineError("eval needs rouge-score and sacrebleu: pip install 'enrich[train]'") from None
    return rouge_scorer, sacrebleu


def rouge_l(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Mean ROUGE-L F1 over rows (stemmed, as in most summarization papers)."""
    rouge_scorer, _ = _libraries()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    return sum(scores) / len(scores) if scores else 0.0


def text_metrics(hyps: Sequence[str], refs: Sequence[str]) -> dict[str, float]:
    """ROUGE-L, chrF and BLEU of the texts against the references."""
    _, sacrebleu = _libraries()
    return {
        "rouge_l": round(rouge_l(hyps, refs), 4),
        "chrf": round(float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score), 2),
        "bleu": round(float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score), 2),
    }


def score(
    hyps: Sequence[str],
    refs: Sequence[str],
    finish_reasons: Sequence[str],
    flags: Sequence[Sequence[str]],
    output_tokens: Sequence[int],
    text: bool = True,
) -> dict[str, Any]:
    """Every metric of one model's generations against the reference descriptions; text=False leaves out
    ROUGE-L, chrF and BLEU (scored against other references)."""
    n = len(hyps)
    if n == 0:
        return {}
    ref_chars = sum(len(r) for r in refs)
    return {
        "rows": n,
        **(text_metrics(hyps, refs) if text else {}),
        # Total generated characters over total reference characters: 1 is the catalog's own length.
        "length_ratio": round(sum(len(h) for h in hyps) / max(ref_chars, 1), 3),
        "mean_chars": round(sum(len(h) for h in hyps) / n, 1),
        "mean_output_tokens": round(sum(output_tokens) / n, 1),
        "eos_rate": round(sum(1 for f in finish_reasons if f == "stop") / n, 4),
        "flag_rates": {f: round(sum(1 for fl in flags if f in fl) / n, 4) for f in FLAGS},
    }
