"""Regeneration: a row flagged for unsupported claims is generated again in its window, and the first candidate
that passes every check is written (status regenerated), deterministically, with the report's counts.

The engine stands in for a model at the edge this test is not about: for real Flipkart rows it answers the
row's real description (which states colours, fabrics and details the attributes lack) to the first request, and
to the candidates first that description again, then the description cut to what the row's facts support. The
checks, the policies, the candidates' seeds and the choice are enrich's own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from enrich.config import build_job
from enrich.model.generation import Generation, Progress, Sampling
from enrich.quality.claims import check, facts, faithful
from enrich.quality.vocabulary import base_vocabulary
from enrich.run import run

DATA = Path(__file__).parent / "data" / "claims_rows.parquet"


class Scripted:
    """Answers by the product in the prompt: its real description first, then the candidates' texts."""

    name = "scripted"
    tokenizer = None
    max_model_len = 1 << 20

    def __init__(self, rows: pl.DataFrame) -> None:
        self.first = dict(zip(rows["title"], rows["content"], strict=True))
        self.facts = {
            r["title"]: facts(r["title"], [("Brand", r["brand"] or "")]) for r in rows.iter_rows(named=True)
        }
        self.cut = {
            title: faithful(text, self.facts[title], base_vocabulary()).text
            for title, text in self.first.items()
        }
        self.calls: list[tuple[int, float, int]] = []  # prompts, temperature, seed of each request

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        self.calls.append((len(prompts), sampling.temperature, sampling.seed))
        out = []
        seen: dict[str, int] = {}
        for prompt in prompts:
            title = prompt.split("### Input:\n", 1)[1].split("\n", 1)[0]
            k = seen[title] = seen.get(title, -1) + 1  # the k-th candidate of this row in the request
            first_request = len(self.calls) == 1
            text = self.first[title] if first_request or k == 0 else self.cut[title]
            out.append(Generation(text, "stop", 10, 20))
        return out

    def close(self) -> None:
        pass


def job_for(src: Path, out: Path) -> object:
    return build_job(
        {"input": {"path": str(src), "attributes": ["brand"]}, "output": {"path": str(out)}},
        {
            "model.engine": "echo",
            "prompt.template": "alpaca",
            "sampling.temperature": 0,
            "policies.unsupported_claims": "regenerate",
            "policies.candidates": 3,
            "batch.window_rows": 8,
            "run.review": False,
        },
    )


def test_a_flagged_row_is_rescued_by_a_candidate(tmp_path: Path) -> None:
    rows = (
        pl.read_parquet(DATA).filter(pl.col("source") == "flipkart").select("id", "title", "content", "brand")
    )
    rows = rows.unique("title", keep="first", maintain_order=True).head(8)
    src = tmp_path / "shop.parquet"
    rows.drop("content").write_parquet(src)  # no existing description: the facts are title and brand
    engine = Scripted(rows)
    out = tmp_path / "out.parquet"
    report = run(job_for(src, out), engine=engine)  # type: ignore[arg-type]
    got = pl.read_parquet(out)
    statuses = got["enrich_status"].to_list()
    flagged_first = [t for t in rows["title"] if check(engine.first[t], engine.facts[t], base_vocabulary())]
    assert flagged_first, "real descriptions state facts their attributes lack"
    rescued = [s for s in statuses if s == "regenerated"]
    assert len(rescued) == report.counts.regenerated == report.regeneration["rescued"]  # type: ignore[index]
    assert report.regeneration["rows"] == len(flagged_first)  # type: ignore[index]
    assert report.regeneration["rescued"] + report.regeneration["still_flagged"] == len(flagged_first)  # type: ignore[index]
    assert rescued, "a cut description passes every check"
    for row in got.filter(pl.col("enrich_status") == "regenerated").iter_rows(named=True):
        assert row["generated_description"] == engine.cut[row["title"]] and row["enrich_unsupported"] == []
    # One request for the candidates, sampled (the run decodes greedily) with a seed of its own.
    assert engine.calls[0][1] == 0 and engine.calls[1] == (3 * len(flagged_first), 0.7, engine.calls[1][2])
    assert engine.calls[1][2] != engine.calls[0][2]
    # The same run again gives the same texts.
    again = tmp_path / "again.parquet"
    run(job_for(src, again), engine=Scripted(rows))  # type: ignore[arg-type]
    assert pl.read_parquet(again)["generated_description"].equals(got["generated_description"])
    saved = json.loads(Path(f"{out}.report.json").read_text())
    assert saved["regeneration"]["output_tokens"] == 3 * len(flagged_first) * 20
