"""Ray scale-out on GPUs (issue 6): `enrich run --engine ray` with vLLM in two workers against one, same prompts.

Same work as bench/gpu_generate.py: the Llama-3.1-8B architecture with vLLM's dummy (random) weights and the
embedded tokenizer, real titles from bench/data/gpu_catalog.parquet in the chat template, every row generating
exactly 256 tokens (EOS ignored) at temperature 0.7, top-p 0.9. One process, one Ray; each way is a real
`loop.run` on a Parquet catalog, with Ray Data's actor pool of enrich's VLLMEngine.

- 2 or more GPUs: 1 worker on 1 GPU against 2 workers on 1 GPU each. Target: 2 workers >= 1.9x.
- 1 GPU: 1 worker holding the GPU against 2 workers sharing it (0.5 GPU, 0.42 of its memory each).
- With `ray[llm]` importable: `ray.data.llm`'s vLLM processor on the same prompts, same worker counts, for the
  choice between it and enrich's own pool (enrich/distributed.py says why we chose ours).

On the device: `bench/device/run.sh ray` (bench/device/README.md: the stack, polars and a trimmed `ray[data]==2.60.0`
carried by payload.sh), which runs

    PYTHONPATH=$SITE/ray:$INFER python3 bench/ray_gpu.py /tmp/enrich-bench/llama-8b-arch [--prompts 4096] [--window-rows 1024]

Figures: `wall` is the whole loop.run (Ray actors and vLLM starting included); `pool` is rows over the
busiest worker's time inside its windows (read, prompt, generate, postprocess): the throughput once started.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gpu_generate as gg  # noqa: E402  (the issue 4 bench: model directory, titles, prompts, fixed work)


@dataclasses.dataclass
class FixedLength:
    """The engine under test with ignore_eos forced: every row generates exactly NEW_TOKENS tokens."""

    engine: Any

    def __post_init__(self) -> None:
        self.name, self.tokenizer, self.max_model_len = (
            "vllm",
            self.engine.tokenizer,
            self.engine.max_model_len,
        )

    def generate(self, prompts: Any, sampling: Any, on_progress: Any = None) -> Any:
        return self.engine.generate(prompts, dataclasses.replace(sampling, ignore_eos=True), on_progress)

    def close(self) -> None:
        self.engine.close()


def dummy_vllm_in_worker() -> None:
    """Ray's worker setup hook: in every worker, engine 'vllm' loads dummy weights and ignores EOS."""
    from enrich.model import engines

    def make(spec: Any, config: Any, batch_size: int) -> Any:
        return FixedLength(engines.VLLMEngine(spec, config, batch_size, load_format="dummy"))

    engines.ENGINES["vllm"] = make


def layouts(n_gpus: int) -> list[dict[str, Any]]:
    """Worker count, GPUs per worker and vLLM memory share of each way measured."""
    if n_gpus >= 2:
        return [{"workers": 1, "gpus": 1.0, "memory": 0.9}, {"workers": 2, "gpus": 1.0, "memory": 0.9}]
    return [{"workers": 1, "gpus": 1.0, "memory": 0.9}, {"workers": 2, "gpus": 0.5, "memory": 0.42}]


def enrich_way(
    model_dir: Path, source: Path, work: Path, way: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """One `loop.run` with --engine ray; its figures."""
    import pyarrow.parquet as pq

    from enrich.config import JobConfig
    from enrich.run import loop

    out = work / f"out-ray-{way['workers']}.parquet"
    job = JobConfig.model_validate(
        {
            "input": {"path": str(source), "columns": {"id": "id", "title": "title", "content": None}},
            "output": {"path": str(out), "overwrite": True},
            "model": {
                "ref": str(model_dir),
                "engine": "ray",
                "gpu_memory_utilization": way["memory"],
                "max_num_seqs": args.max_num_seqs,
                "max_num_batched_tokens": args.max_num_batched_tokens,
                "enable_prefix_caching": args.prefix_caching,
            },
            "ray": {
                "workers": way["workers"],
                "engine": "transformers" if args.smoke else "vllm",
                "gpus_per_worker": 0 if args.smoke else way["gpus"],
            },
            "sampling": {
                "temperature": gg.TEMPERATURE,
                "top_p": gg.TOP_P,
                "max_new_tokens": 8 if args.smoke else gg.NEW_TOKENS,
                "repetition_penalty": 1.0,
            },
            "batch": {"window_rows": args.window_rows},
            "run": {"restart": True},
        }
    )
    t = time.perf_counter()
    report = loop.run(job)
    wall = time.perf_counter() - t
    workers = report.workers or []
    busy = max(w["busy_s"] for w in workers)
    rows = pq.read_metadata(out).num_rows
    assert rows == args.prompts, f"{out}: {rows} rows, expected {args.prompts}"
    return {
        "way": f"enrich --engine ray, {way['workers']} worker(s) x {way['gpus']} GPU",
        **way,
        "rows": rows,
        "wall_s": round(wall, 1),
        "wall_rows_per_s": round(rows / wall, 2),
        "pool_rows_per_s": round(rows / busy, 2),
        "output_tokens": report.tokens.output,
        "workers_detail": workers,
        "output": str(out),
    }


def data_llm_way(
    model_dir: Path, prompts: list[str], way: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """ray.data.llm's vLLM processor on the same prompt texts (our template), same fixed work."""
    import ray.data
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=str(model_dir),
        engine_kwargs={
            "load_format": "dummy",
            "gpu_memory_utilization": way["memory"],
            "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens,
            "enable_prefix_caching": args.prefix_caching,
        },
        concurrency=way["workers"],
        batch_size=args.llm_batch_size,
        chat_template_stage=False,  # the prompts are already in the model's template, built by enrich
        tokenize_stage=False,
        detokenize_stage=False,
    )
    params = {
        "temperature": gg.TEMPERATURE,
        "top_p": gg.TOP_P,
        "max_tokens": gg.NEW_TOKENS,
        "min_tokens": gg.NEW_TOKENS,
        "ignore_eos": True,
    }
    processor = build_processor(
        config,
        preprocess=lambda row: {"prompt": row["prompt"], "sampling_params": params},
        postprocess=lambda row: {"tokens": row["num_generated_tokens"]},
    )
    t = time.perf_counter()
    out = processor(ray.data.from_items([{"prompt": p} for p in prompts])).materialize()
    wall = time.perf_counter() - t
    tokens = int(out.sum("tokens"))
    return {
        "way": f"ray.data.llm vLLM processor, concurrency {way['workers']}",
        **way,
        "rows": out.count(),
        "wall_s": round(wall, 1),
        "wall_rows_per_s": round(out.count() / wall, 2),
        "pool_rows_per_s": None,
        "output_tokens": tokens,
    }


def same_rows(a: str, b: str) -> float:
    """Share of rows whose generated text is identical in two outputs (GPU kernels may differ by batch)."""
    import pyarrow.parquet as pq

    x = pq.read_table(a, columns=["generated_description"]).column(0).to_pylist()
    y = pq.read_table(b, columns=["generated_description"]).column(0).to_pylist()
    return sum(p == q for p, q in zip(x, y, strict=True)) / max(len(x), 1)


def save(path: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "results": results}, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--prompts", type=int, default=4096)
    # 2,048-row windows: 93.8 rows/s on one H200 and 169.3 on two, against 76.1 and 142.0 with 1,024 (bench/RESULTS.md).
    ap.add_argument("--window-rows", type=int, default=2048)
    # enrich's defaults on a GPU of 70 GiB or more (bench/RESULTS.md, issue 4), given to both ways alike.
    ap.add_argument("--max-num-seqs", type=int, default=2048)
    ap.add_argument("--max-num-batched-tokens", type=int, default=65536)
    ap.add_argument("--llm-batch-size", type=int, default=256)
    ap.add_argument("--no-data-llm", action="store_true", help="skip the ray.data.llm processor")
    ap.add_argument(
        "--smoke", action="store_true", help="CPU check of this script: transformers workers, no GPU"
    )
    ap.add_argument("--json", type=Path, default=HERE / "results" / "ray_gpu.json")
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import torch
    from transformers import AutoTokenizer

    if not (args.model_dir / "config.json").is_file():
        gg.make_model(args.model_dir)
    n_gpus = torch.cuda.device_count()
    device = torch.cuda.get_device_name() if n_gpus else "no GPU"
    work = Path(os.environ.get("BENCH_WORK", "/tmp/enrich-bench")) / "ray"
    work.mkdir(parents=True, exist_ok=True)
    available = pq.read_metadata(gg.DATA).num_rows
    ids, titles = gg.titles(min(args.prompts, available))
    # More prompts than real titles (e.g. 8,192: 4 windows of 2,048, two per GPU): the titles repeat, with the
    # prefix cache off in every way, so that a repeated prompt costs what a new one does.
    args.prefix_caching = args.prompts <= available
    if not args.prefix_caching:
        ids = [f"{ids[i % available]}-{i // available}" for i in range(args.prompts)]
        titles = [titles[i % available] for i in range(args.prompts)]
    source = work / f"catalog-{args.prompts}.parquet"
    pq.write_table(pa.table({"id": ids, "title": titles}), source)
    env = {
        k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "HF_", "TRANSFORMERS_", "TOKENIZERS_"))
    }
    hook = {} if args.smoke else {"worker_process_setup_hook": dummy_vllm_in_worker}
    ray.init(runtime_env={**hook, "env_vars": env}, include_dashboard=False)
    results: list[dict[str, Any]] = []
    for way in layouts(n_gpus):
        results.append(enrich_way(args.model_dir, source, work, way, args))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "workers_detail"}), flush=True)
    one, two = results[0], results[1]
    ratio = two["pool_rows_per_s"] / one["pool_rows_per_s"]
    wall_ratio = two["wall_rows_per_s"] / one["wall_rows_per_s"]
    agreement = same_rows(one["output"], two["output"])
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": f"{n_gpus} x {device}",
        "prompts": args.prompts,
        "window_rows": args.window_rows,
        "prefix_caching": args.prefix_caching,
        "new_tokens": gg.NEW_TOKENS,
        "ratio_pool": round(ratio, 3),
        "ratio_wall": round(wall_ratio, 3),
        "same_rows": round(agreement, 4),
    }
    save(args.json, meta, results)  # enrich's figures are kept whatever the comparison below does
    if not args.no_data_llm and not args.smoke:
        try:
            from enrich.model.prompts import build_prompts, get_template

            tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
            prompts = build_prompts(titles, get_template("chat"), tokenizer.apply_chat_template)
            for way in layouts(n_gpus) if n_gpus >= 2 else layouts(n_gpus)[:1]:
                results.append(data_llm_way(args.model_dir, prompts, way, args))
                print(json.dumps(results[-1]), flush=True)
                save(args.json, meta, results)
        except Exception as err:  # a comparison, not the product: any failure is reported, enrich's kept
            print(f"SKIP ray.data.llm: {type(err).__name__}: {err} (needs ray[llm])", flush=True)
    ray.shutdown()
    print("| way | GPUs | rows | wall s | rows/s (wall) | rows/s (pool) |\n|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['way']} | {r['workers'] * r['gpus']:g} | {r['rows']} | {r['wall_s']} | {r['wall_rows_per_s']} | "
            f"{r['pool_rows_per_s'] or '-'} |"
        )
    print(
        f"2 workers / 1 worker: {ratio:.2f}x pool, {wall_ratio:.2f}x wall (target >= 1.9x on 2 GPUs; {n_gpus} GPU(s) "
        f"here); identical rows between the two: {agreement:.1%}"
    )


if __name__ == "__main__":
    main()
