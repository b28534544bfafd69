"""Is a fresh vLLM engine's first window slower than the next ones? (issue 6: the Ray workers' per-GPU shortfall)

On 2 H200s each of two Ray workers ran its one 2,048-row window at 21.7k output tokens/s, while one worker did its
two windows at 24.0k on average (bench/RESULTS.md, "Ray Data", session 4). Either the first window of a freshly
started engine is slow (the lone worker's second window ran warm), or two engines on one host slow each other.
This times consecutive windows on one engine, one GPU, with the Ray benchmark's work: enrich's VLLMEngine with
its large-GPU settings, the Llama-3.1-8B architecture with dummy weights, 2,048 real titles a window, 256 tokens a
row (EOS ignored), temperature 0.7, top-p 0.9, enrich's per-row seeds. The prefix cache is reset between windows.

    PYTHONPATH=$INFER python bench/vllm_first_window.py MODEL_DIR [--windows 3] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import gpu_generate as gg  # noqa: E402  (the issue 4 bench: model directory, titles, prompts, fixed work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--windows", type=int, default=3, help="consecutive windows timed (the titles repeat)")
    ap.add_argument("--window-rows", type=int, default=2048)
    ap.add_argument("--json", type=Path, default=HERE / "results" / "vllm_first_window.json")
    args = ap.parse_args()

    import torch

    from enrich.config import ModelConfig
    from enrich.model.engines import VLLMEngine
    from enrich.model.generation import Sampling
    from enrich.model.reference import resolve_model, versions

    if not (args.model_dir / "config.json").is_file():
        gg.make_model(args.model_dir)
    t = time.perf_counter()
    config = ModelConfig(
        ref=str(args.model_dir), engine="vllm", max_num_seqs=2048, max_num_batched_tokens=65536
    )
    engine = VLLMEngine(resolve_model(str(args.model_dir)), config, 0, load_format="dummy")
    startup = time.perf_counter() - t
    print(f"vLLM started in {startup:.1f} s", flush=True)
    rows = args.window_rows
    prompts = gg.prompts_for(engine.tokenizer, 2 * rows)
    sampling = Sampling(
        temperature=gg.TEMPERATURE, top_p=gg.TOP_P, max_new_tokens=gg.NEW_TOKENS, ignore_eos=True
    )
    windows = []
    for k in range(args.windows):
        window = prompts[(k % 2) * rows : (k % 2 + 1) * rows]
        engine.llm.reset_prefix_cache()
        t = time.perf_counter()
        out = engine.generate(window, sampling)
        secs = time.perf_counter() - t
        tokens = sum(g.output_tokens for g in out)
        windows.append(
            {"window": k, "rows": len(out), "seconds": round(secs, 2), "tokens_per_s": round(tokens / secs)}
        )
        print(json.dumps(windows[-1]), flush=True)
        result = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": torch.cuda.get_device_name(),
            "versions": versions(),
            "startup_s": round(startup, 1),
            "windows": windows,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(result, indent=2) + "\n"
        )  # after every window: a cut run keeps its figures
    engine.close()
    first, rest = windows[0]["seconds"], [w["seconds"] for w in windows[1:]]
    if rest:
        print(
            f"first window {first} s, later ones {sum(rest) / len(rest):.2f} s on average: {first / (sum(rest) / len(rest)):.2f}x"
        )


if __name__ == "__main__":
    main()
