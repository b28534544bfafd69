"""Regeneration: a row flagged for unsupported claims is generated again in its window, and the first candidate
that passes every check is written (status regenerated), deterministically, with the report's counts.

The engine stands in for a model at the edge this test is not about: for real Flipkart rows it answers the
row's real description (which states colours, fabrics and details the attributes lack) to the first request and
to the first round of candidates, then the description cut to what the row's facts support. The checks, the
policies, the rounds' seeds and the choice are enrich's own."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from enrich.config import build_job
from enrich.model.generation import Generation, Progress, Sampling
from enrich.quality.claims import check, facts, faithful
from enrich.quality.flags import inspect
from enrich.quality.vocabulary import base_vocabulary
from enrich.run import run

DATA = Path(__file__).parent / "data" / "claims_rows.parquet"


ATTRIBUTES = ("brand", "color", "fabric", "pattern", "ideal_for", "sleeve", "neck", "type", "occasion")


def stated(row: dict[str, object]) -> list[tuple[str, str]]:
    return [(c.replace("_", " ").capitalize(), str(row[c])) for c in ATTRIBUTES if row[c]]


class Scripted:
    """Answers by the product in the prompt: its real description first, then the candidates' texts."""

    name = "scripted"
    tokenizer = None
    max_model_len = 1 << 20

    def __init__(self, rows: pl.DataFrame) -> None:
        self.first = dict(zip(rows["title"], rows["content"], strict=True))
        self.facts = {r["title"]: facts(r["title"], stated(r)) for r in rows.iter_rows(named=True)}
        self.cut = {
            t: faithful(text, self.facts[t], base_vocabulary()).text for t, text in self.first.items()
        }
        self.calls: list[tuple[int, float, int]] = []  # prompts, temperature, seed of each request

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        self.calls.append((len(prompts), sampling.temperature, sampling.seed))
        titles = [prompt.split("### Input:\n", 1)[1].split("\n", 1)[0] for prompt in prompts]
        texts = self.first if len(self.calls) <= 2 else self.cut  # the second round of candidates passes
        return [Generation(texts[title], "stop", 10, 20) for title in titles]

    def close(self) -> None:
        pass


def job_for(src: Path, out: Path) -> object:
    return build_job(
        {"input": {"path": str(src), "attributes": list(ATTRIBUTES)}, "output": {"path": str(out)}},
        {
            "model.ref": "smollm2-135m",  # a model trained without attributes: the job's are stated as given
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
    every = pl.read_parquet(DATA).filter(pl.col("source") == "flipkart").unique("title", maintain_order=True)
    every = every.select("id", "title", "content", *ATTRIBUTES)
    probe = Scripted(every)
    v = base_vocabulary()
    # Rows whose description states what their attributes lack, and whose faithful cut says something true.
    chosen = [
        t
        for t in every["title"]
        if check(probe.first[t], probe.facts[t], v)
        and not inspect(probe.cut[t], "stop", probe.facts[t], (), v).flags
    ]
    assert len(chosen) >= 3, chosen
    rows = every.filter(pl.col("title").is_in(chosen))
    src = tmp_path / "shop.parquet"
    rows.drop("content").write_parquet(src)  # no existing description: the facts are title and attributes
    engine = Scripted(rows)
    out = tmp_path / "out.parquet"
    report = run(job_for(src, out), engine=engine)  # type: ignore[arg-type]
    got = pl.read_parquet(out)
    n = rows.height
    assert report.counts.regenerated == n == got["enrich_status"].to_list().count("regenerated")
    assert report.regeneration == {"rows": n, "rescued": n, "still_flagged": 0, "output_tokens": 2 * n * 20}
    for row in got.iter_rows(named=True):
        assert row["generated_description"] == engine.cut[row["title"]] and row["enrich_unsupported"] == []
    # A round is one request for the rows still flagged, sampled (the run decodes greedily), a seed of its own.
    assert [(c[0], c[1]) for c in engine.calls] == [(n, 0.0), (n, 0.7), (n, 0.7)]
    assert len({c[2] for c in engine.calls}) == 3
    # The same run again gives the same texts.
    again = tmp_path / "again.parquet"
    run(job_for(src, again), engine=Scripted(rows))  # type: ignore[arg-type]
    assert pl.read_parquet(again)["generated_description"].equals(got["generated_description"])
    saved = json.loads(Path(f"{out}.report.json").read_text())
    assert saved["counts"]["regenerated"] == n and saved["regeneration"]["rescued"] == n
