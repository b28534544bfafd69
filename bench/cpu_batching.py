"""The embedded model on CPU: one generate call per row (the reference notebook's way) against enrich's
batched engine and against `enrich run` end to end, on the same real titles and the same token limit.

Every prompt generates exactly --new-tokens tokens (EOS ignored) so that each way does the same work.
Prints a table; target: batched at least 3x the row-by-row rate.

    python bench/cpu_batching.py [--rows 32] [--new-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import torch

from enrich.config import ModelConfig, build_job
from enrich.model.engines import TransformersEngine
from enrich.model.generation import Sampling
from enrich.model.prompts import CHAT, build_prompts
from enrich.model.reference import resolve_model
from enrich.run.loop import run

HERE = Path(__file__).resolve().parent


def row_by_row(engine: TransformersEngine, prompts: list[str], new_tokens: int) -> tuple[float, int]:
    """The reference notebook's loop: tokenize one prompt, generate, decode; no padding, no batching."""
    tok, model = engine.tokenizer, engine.model
    t = time.perf_counter()
    produced = 0
    torch.manual_seed(0)
    for prompt in prompts:
        inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=True,
                temperature=0.7,
                top_p=0.9,
                pad_token_id=tok.pad_token_id,
            )
        produced += out.shape[1] - inputs["input_ids"].shape[1]
        tok.decode(out[0, inputs["input_ids"].shape[1] :])
    return time.perf_counter() - t, produced


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=24)
    args = parser.parse_args()
    catalog = HERE.parent / "examples" / "catalog.parquet"
    titles = pl.read_parquet(catalog)["title"].head(args.rows).to_list()
    spec = resolve_model("smollm2-135m")
    engine = TransformersEngine(spec, ModelConfig(), args.batch_size)
    prompts = build_prompts(titles, CHAT, engine.tokenizer.apply_chat_template)
    sampling = Sampling(temperature=0.7, top_p=0.9, max_new_tokens=args.new_tokens, seed=0, ignore_eos=True)

    rows = []
    seconds, produced = row_by_row(engine, prompts, args.new_tokens)
    rows.append(("one generate per row (reference)", seconds, produced))
    t = time.perf_counter()
    gens = engine.generate(prompts, sampling)
    rows.append(
        (
            f"enrich engine, batch {args.batch_size}",
            time.perf_counter() - t,
            sum(g.output_tokens for g in gens),
        )
    )
    engine.close()

    work = HERE / "work"
    work.mkdir(exist_ok=True)
    src = work / "cpu-batching.parquet"
    pl.read_parquet(catalog).head(args.rows).write_parquet(src)
    job = build_job(
        {
            "input": {"path": str(src)},
            "output": {"path": str(work / "cpu-batching.out.parquet"), "overwrite": True},
        },
        {
            "batch.batch_size": args.batch_size,
            "sampling.max_new_tokens": args.new_tokens,
            "run.restart": True,
        },
    )
    # `enrich run` stops at EOS like a real run; its rate is per output token actually produced.
    report = run(job)
    rows.append(
        (
            f"enrich run end to end, batch {args.batch_size} (stops at EOS)",
            report.seconds.total,
            report.tokens.output,
        )
    )

    base = rows[0][2] / rows[0][1]
    print(
        f"\n{args.rows} real titles, {args.new_tokens} new tokens each, SmolLM2-135M on "
        f"{torch.get_num_threads()} CPU threads"
    )
    print(f"{'way':<58} {'seconds':>8} {'rows/s':>7} {'tokens/s':>9} {'× reference':>11}")
    result = []
    for name, seconds, tokens in rows:
        tps = tokens / seconds
        print(f"{name:<58} {seconds:>8.1f} {args.rows / seconds:>7.2f} {tps:>9.1f} {tps / base:>11.2f}")
        result.append(
            {"way": name, "seconds": seconds, "rows_per_s": args.rows / seconds, "output_tokens_per_s": tps}
        )
    out = HERE / "results" / "cpu_batching.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": platform.machine(),
                "threads": torch.get_num_threads(),
                "rows": args.rows,
                "new_tokens": args.new_tokens,
                "results": result,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
