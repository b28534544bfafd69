"""Review pages: one self-contained HTML file per run (rows, flags, decisions) and per eval."""

from enrich.review.decisions import Decision, read_decisions
from enrich.review.evalpage import write_eval_page
from enrich.review.page import write_review

__all__ = ["Decision", "read_decisions", "write_eval_page", "write_review"]
