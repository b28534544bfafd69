"""The repetition penalty's scope: all tokens (transformers' and vLLM's own) or the generated ones only."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from _support import enrich

from enrich.model.engines import repetition_kwargs
from enrich.model.generation import Sampling

# Held-out Amazon rows (of the split bench/split.py writes) whose brands the default model misspelled when its
# penalty counted the prompt: "EzoShim", "CovidiCondo".
ROWS = [
    {
        "id": "amz18-indsci-00651",
        "title": "EZ-SHIM JS500BP 4-Count Bath Fixture Shims",
        "brand": "EZ-SHIM",
        "category": "Industrial & Scientific",
    },
    {
        "id": "amz18-indsci-00787",
        "title": "Covidien 6818 Webcol Alcohol Prep, Sterile, Medium, 2-Ply (Pack of 200)",
        "brand": "COVIDIEN",
        "category": "Industrial & Scientific",
    },
]


def test_output_scope_penalises_the_generated_tokens_and_leaves_the_prompts() -> None:
    sampling = Sampling(0.0, 1.0, 8, repetition_penalty=2.0, penalty_scope="output")
    kwargs = repetition_kwargs(sampling, prompt_length=3)
    assert kwargs["repetition_penalty"] == 1.0
    (processor,) = kwargs["logits_processor"]
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 9]])  # 3 prompt tokens (left-padded alike), 2 generated
    scores = torch.tensor([[v - 4.5 for v in range(10)]] * 2)  # token t's logit: t - 4.5
    out = processor(ids, scores.clone())
    changed = {(r, t) for r in range(2) for t in range(10) if out[r, t] != scores[r, t]}
    assert changed == {(0, 4), (0, 5), (1, 9)}  # the generated tokens only, a repeated one once
    assert out[0, 4] == -1.0 and out[0, 5] == 0.25 and out[1, 9] == 2.25  # negative times, positive divided
    # Nothing generated yet: nothing to penalise.
    assert torch.equal(processor(ids[:, :3], scores.clone()), scores)


def test_all_scope_and_no_penalty_are_transformers_own() -> None:
    assert repetition_kwargs(Sampling(0.0, 1.0, 8, 1.3), 5) == {"repetition_penalty": 1.3}
    assert repetition_kwargs(Sampling(0.0, 1.0, 8, 1.0, penalty_scope="output"), 5) == {
        "repetition_penalty": 1.0
    }


def test_the_scope_enters_a_fingerprint_only_where_it_is_not_all() -> None:
    """Runs started before the scope existed keep their fingerprints (the plan digests Sampling.identity())."""
    before = {"temperature", "top_p", "max_new_tokens", "repetition_penalty", "seed", "ignore_eos"}
    assert set(Sampling(0.7, 0.9, 128, 1.1).identity()) == before
    assert set(Sampling(0.7, 0.9, 128, 1.1, penalty_scope="output").identity()) == before | {"penalty_scope"}
    assert "ignore_eos" not in Sampling(0.7, 0.9, 128, 1.1).reported()


def test_vllm_refuses_an_output_scope_before_anything_loads(tmp_path: Path) -> None:
    src = tmp_path / "catalog.parquet"
    pl.DataFrame(ROWS).write_parquet(src)
    args = ("run", src, "-o", tmp_path / "out.parquet", "--engine", "vllm", "--repetition-penalty", "1.2")
    r = enrich(*args, "--penalty-scope", "output")
    assert r.exit_code == 2, r.output
    assert (
        "vLLM's repetition penalty counts the prompt's tokens too" in r.output
        and "--penalty-scope all" in r.output
    )
    assert not (tmp_path / "out.parquet.enrich").exists()


@pytest.mark.slow
def test_the_default_model_copies_the_brand_it_is_given(tmp_path: Path) -> None:
    """The shipped default (greedy, penalty 1.15 on its own tokens) states each brand as the prompt gives it;
    the same penalty counted over the prompt misspells them."""
    src = tmp_path / "catalog.parquet"
    pl.DataFrame(ROWS).write_parquet(src)
    texts = {}
    for scope in ("output", "all"):
        out = tmp_path / f"{scope}.parquet"
        r = enrich("run", src, "-o", out, "--penalty-scope", scope, "--max-new-tokens", "40")
        assert r.exit_code in (0, 6), r.output[-2000:]
        texts[scope] = pl.read_parquet(out)["generated_description"].to_list()
        report = json.loads(Path(f"{out}.report.json").read_text())
        assert report["model"]["name"] == "smollm2-135m-catalog"
        assert report["sampling"]["repetition_penalty"] == 1.15
    assert report["sampling"].get("penalty_scope") is None  # "all": as reports wrote it before the scope
    stated = [
        t.upper().startswith(row["title"].split()[0].upper())
        for t, row in zip(texts["output"], ROWS, strict=True)
    ]
    assert all(stated), texts["output"]
    assert not any(row["brand"].upper() in t.upper() for t, row in zip(texts["all"], ROWS, strict=True)), (
        texts["all"]
    )
