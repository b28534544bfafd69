"""`enrich run` on real files: formats, column mapping, bad rows, reruns, progress logs, dry run.

Bad input (exit codes and messages) is tested in test_reliability.py, as are kill -9 and signals.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from _support import DATA, enrich, until

from enrich.contracts import OUTPUT_COLUMNS
from enrich.model import engines
from enrich.model.engines import TransformersEngine
from enrich.model.generation import Generation, Progress, Sampling


def tiny_args(model: Path) -> list[str]:
    return ["--model", str(model), "--max-new-tokens", "4", "--window-rows", "8", "--log-format", "json"]


def test_messy_csv_with_other_column_names(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "shop.out.csv"
    r = enrich(
        "run",
        DATA / "shop_messy.csv",
        "-o",
        out,
        "--id-col",
        "sku",
        "--title-col",
        "name",
        "--content-col",
        "body",
        *tiny_args(tiny_model),
    )
    assert r.exit_code == 6, r.output  # two rows with a null or blank title go to the error file
    assert "2 rows went to" in r.output
    src = pl.read_csv(DATA / "shop_messy.csv", infer_schema=False)
    got = pl.read_csv(out, infer_schema=False)
    assert got.columns == [*src.columns, *OUTPUT_COLUMNS]
    assert got.select(src.columns).equals(src)  # every input value round-trips, multi-line bodies included
    errors = [json.loads(line) for line in Path(f"{out}.errors.jsonl").read_text().splitlines()]
    assert [(e["row"], e["stage"]) for e in errors] == [(3, "validate"), (5, "validate")]
    assert "name is null" in errors[0]["reason"] and "shop_messy.csv row 3" in errors[0]["reason"]
    assert got["enrich_status"].to_list().count("error") == 2
    assert got["name"][7] == "Stylo à bille « Élégance » — 0,7 mm, bleu ✓ 日本製"


def test_parquet_types_and_order_kept(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    r = enrich("run", catalog, "-o", out, "--limit", "20", *tiny_args(tiny_model))
    assert r.exit_code == 0, r.output
    src = pl.read_parquet(catalog).head(20)
    got = pl.read_parquet(out)
    assert got.select(src.columns).equals(src)
    assert got.schema["source_item_index"] == pl.Int64
    assert got.schema["enrich_flags"] == pl.List(pl.String)
    assert got["enrich_output_tokens"].to_list() == [4] * 20  # random weights never stop early
    assert got["enrich_finish_reason"].unique().to_list() == ["length"]
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["counts"]["rows"] == 20 and report["counts"]["generated"] == 20
    assert report["tokens"]["output"] == 80
    assert set(report["seconds"]) >= {"read", "prompt", "generate", "write", "total"}


def test_parquet_to_csv(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    r = enrich("run", catalog, "-o", out, "--limit", "10", *tiny_args(tiny_model))
    assert r.exit_code == 0, r.output
    got = pl.read_csv(out)
    assert got.height == 10 and got["id"].to_list() == pl.read_parquet(catalog)["id"].head(10).to_list()


def test_seeded_runs_are_reproducible(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    def sampled(name: str, seed: int) -> list[str]:
        out = tmp_path / f"{name}.parquet"
        r = enrich(
            "run",
            catalog,
            "-o",
            out,
            "--limit",
            "12",
            "--seed",
            str(seed),
            "--temperature",
            "0.9",
            *tiny_args(tiny_model),
        )
        assert r.exit_code == 0, r.output
        return list(pl.read_parquet(out)["generated_description"].to_list())

    first = sampled("a", 7)
    assert sampled("b", 7) == first
    assert sampled("c", 8) != first


@pytest.fixture()
def bad_titles(tmp_path: Path) -> Path:
    path = tmp_path / "bad.parquet"
    pl.DataFrame(
        {
            "id": ["a", "b", "c", "d", "a", "f"],
            "title": ["Stapler, black", None, "", "x" * 100_000, "Stapler, red", "Desk lamp"],
        }
    ).write_parquet(path)
    return path


def test_null_empty_long_titles_and_duplicate_ids(tiny_model: Path, bad_titles: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    r = enrich("run", bad_titles, "-o", out, "--long-title", "error", *tiny_args(tiny_model))
    assert r.exit_code == 6, r.output
    errors = {e["row"]: e for e in map(json.loads, Path(f"{out}.errors.jsonl").read_text().splitlines())}
    assert sorted(errors) == [1, 2, 3, 4]
    assert "title is null" in errors[1]["reason"]
    assert "title is empty" in errors[2]["reason"]
    assert "100000 characters" in errors[3]["reason"] and len(errors[3]["value"]) <= 201
    assert "duplicate id 'a' (first at row 0)" in errors[4]["reason"]
    got = pl.read_parquet(out)
    # random weights never stop within 4 tokens: generated rows are flagged 'truncated'
    assert got["enrich_status"].to_list() == ["flagged", "error", "error", "error", "error", "flagged"]


def test_long_title_truncated_by_default(tiny_model: Path, bad_titles: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    r = enrich(
        "run",
        bad_titles,
        "-o",
        out,
        "--duplicate-id",
        "keep",
        "--invalid-row",
        "skip",
        *tiny_args(tiny_model),
    )
    assert r.exit_code == 0, r.output
    statuses = pl.read_parquet(out)["enrich_status"].to_list()
    assert statuses == ["flagged", "skipped", "skipped", "flagged", "flagged", "flagged"]


def test_existing_output_needs_overwrite(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious data")
    r = enrich("run", catalog, "-o", out, "--limit", "5", *tiny_args(tiny_model))
    assert r.exit_code == 2 and "--overwrite" in r.output
    assert out.read_bytes() == b"precious data"
    r = enrich("run", catalog, "-o", out, "--limit", "5", "--overwrite", *tiny_args(tiny_model))
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == 5
    # the same command again: already complete, nothing redone
    r = enrich("run", catalog, "-o", out, "--limit", "5", *tiny_args(tiny_model))
    assert r.exit_code == 0 and "up to date" in r.output
    first_fingerprint = json.loads(Path(f"{out}.report.json").read_text())["fingerprint"]
    # other settings against the finished output: refused, naming the change; --restart regenerates it
    r = enrich("run", catalog, "-o", out, "--limit", "5", "--seed", "3", *tiny_args(tiny_model))
    assert (
        r.exit_code == 2
        and "holds a finished run with other settings (changed since: sampling.seed 0 -> 3)" in r.output
    )
    assert "--restart" in r.output and pl.read_parquet(out).height == 5
    r = enrich("run", catalog, "-o", out, "--limit", "5", "--seed", "3", "--restart", *tiny_args(tiny_model))
    assert r.exit_code == 0, r.output
    assert json.loads(Path(f"{out}.report.json").read_text())["fingerprint"] != first_fingerprint


def test_set_reaches_job_fields_without_an_option_of_their_own(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    r = enrich(
        "run", catalog, "-o", out, "--engine", "echo", "--template", "alpaca", "--limit", "3",
        "--set", "output.generated_column=summary", "--set", "policies.empty=flag",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "summary" in pl.read_parquet(out).columns
    assert json.loads(Path(f"{out}.report.json").read_text())["counts"]["rows"] == 3
    r = enrich("run", catalog, "-o", tmp_path / "p.parquet", "--set", "policies.empty=maybe")
    assert r.exit_code == 2 and "policies.empty" in r.output


def test_parquet_output_keeps_the_input_column_types(tmp_path: Path) -> None:
    """string stays string (polars would write large_string), a dictionary keeps its int32 indices."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    src, out = tmp_path / "typed.parquet", tmp_path / "typed.out.parquet"
    table = pa.table(
        {
            "id": pa.array(["a", "b", "c"], pa.string()),
            "title": pa.array(["Red mug", "Blue pen", "Green cup"], pa.string()),
            "qty": pa.array([1, 2, None], pa.int16()),
            "shelf": pa.array(["x", "y", "x"]).dictionary_encode(),
            "seen": pa.array([datetime.datetime(2024, 1, 1)] * 3, pa.timestamp("ms")),
            "tags": pa.array([["a"], [], ["b", "c"]], pa.list_(pa.string())),
        }
    )
    pq.write_table(table, src)
    r = enrich("run", src, "-o", out, "--engine", "echo", "--template", "alpaca", "--window-rows", "2")
    assert r.exit_code == 0, r.output
    got = pq.read_table(out)
    kept = got.select(table.column_names)
    assert [f.type for f in kept.schema] == [f.type for f in table.schema], kept.schema
    assert kept.to_pylist() == table.to_pylist()
    assert got.schema.field("enrich_flags").type == pa.list_(pa.string())
    assert got.schema.field("generated_description").type == pa.string()


def test_json_progress_lines_count_up_with_an_eta(catalog: Path, tmp_path: Path) -> None:
    r = enrich(
        "run", catalog, "-o", tmp_path / "o.parquet", "--engine", "echo", "--template", "alpaca",
        "--window-rows", "4", "--log-format", "json", "--set", "run.log_every_s=0.000001",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.output.splitlines()]
    progress = [e for e in lines if e["message"] == "progress" and not e.get("heartbeat")]
    total = pl.read_parquet(catalog).height
    assert (
        len(progress) == -(-total // 4) and progress[-1]["rows_done"] == progress[-1]["rows_total"] == total
    )
    done = [e["rows_done"] for e in progress]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert all(e["eta_s"] >= 0 for e in progress) and progress[-1]["eta_s"] == 0


class _AfterTwoBeats(TransformersEngine):
    """The real engine, whose every window starts generating only once the run's log (CliRunner's stderr) holds
    two heartbeats reporting the rows saved before it: the beats certainly come, whatever the machine's speed."""

    rows_done = 0

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        def two_beats() -> bool:
            lines = sys.stderr.buffer.getvalue().decode().splitlines()  # type: ignore[attr-defined]
            beats = [e for e in map(json.loads, lines) if e.get("heartbeat")]
            return sum(e["rows_done"] == self.rows_done for e in beats) >= 2

        until(two_beats, f"two heartbeats at {self.rows_done} rows")
        generated = super().generate(prompts, sampling, on_progress)
        self.rows_done += len(prompts)
        return generated


def test_json_heartbeat_between_windows(
    catalog: Path, tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two windows of 12 rows: while the model loads and generates, heartbeat lines repeat the last figures with
    the time brought up to now, so cron's log shows a live run; the last window's own line ends them."""
    monkeypatch.setitem(engines.ENGINES, "transformers", _AfterTwoBeats)
    r = enrich(
        "run", catalog, "-o", tmp_path / "o.parquet", *tiny_args(tiny_model), "--limit", "24",
        "--window-rows", "12", "--log-format", "json", "--set", "run.log_every_s=0.1",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    progress = [e for e in map(json.loads, r.output.splitlines()) if e["message"] == "progress"]
    last = next(i for i, e in enumerate(progress) if e["rows_done"] == 24 and not e.get("heartbeat"))
    before = [e for e in progress[:last] if e["rows_done"] == 0]  # the model loading, the first window
    assert len(before) >= 2 and all(e["heartbeat"] and e["eta_s"] is None for e in before), progress
    assert all(e["since_save_s"] is None for e in before)  # no window saved yet
    elapsed = [e["elapsed_s"] for e in before]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    between = [e for e in progress[:last] if e["rows_done"] == 12 and e.get("heartbeat")]
    assert len(between) >= 2, progress  # the first window saved, the second under way
    assert all(e["eta_s"] is not None and e["eta_s"] > 0 for e in between)
    since = [e["since_save_s"] for e in between]
    assert since == sorted(since) and since[0] >= 0
    assert progress[last]["eta_s"] == 0
    assert all(e["rows_done"] == 24 for e in progress[last:])  # beats during the assembly repeat the end


def test_pickle_weights_are_refused_before_anything_loads(
    catalog: Path, tmp_path: Path, tiny_model: Path
) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for p in tiny_model.iterdir():
        if p.suffix != ".safetensors":
            (pickled / p.name).symlink_to(p)
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded: a pickle can run code")
    out = tmp_path / "o.parquet"
    r = enrich("run", catalog, "-o", out, "--model", pickled, "--log-format", "text")
    assert r.exit_code == 2, r.output
    assert f"error: {pickled}: holds pickle weights only (pytorch_model.bin)" in r.output and not out.exists()


def test_vllm_arguments_follow_the_gpu_and_the_job(tiny_model: Path) -> None:
    """The scheduler sizes and CUDA-graph range measured on the H200 apply on 70 GiB GPUs unless the job sets its own."""
    from enrich.config import ModelConfig
    from enrich.model.reference import resolve_model
    from enrich.model.vllm import _llm_args

    spec, gib = resolve_model(str(tiny_model)), 2**30
    large = _llm_args(spec, ModelConfig(), 141 * gib)
    assert (large["max_num_seqs"], large["max_num_batched_tokens"]) == (2048, 65536)
    assert large["compilation_config"] == {"max_cudagraph_capture_size": 2048}
    assert large["model"] == spec.path and "enable_lora" not in large
    own = _llm_args(spec, ModelConfig(max_num_seqs=512, quantization="fp8"), 141 * gib)
    assert own["max_num_seqs"] == 512 and own["quantization"] == "fp8"
    assert own["compilation_config"] == {"max_cudagraph_capture_size": 512}
    assert "compilation_config" not in _llm_args(spec, ModelConfig(max_num_seqs=128), 141 * gib)
    small = _llm_args(spec, ModelConfig(), 24 * gib)
    assert not {"max_num_seqs", "max_num_batched_tokens", "compilation_config"} & small.keys()


def test_a_model_folder_without_its_tokenizer_is_engine_error(
    catalog: Path, tmp_path: Path, tiny_model: Path
) -> None:
    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for p in tiny_model.iterdir():  # the weights and config, none of the tokenizer's files
        if p.is_file() and not p.name.startswith(
            ("tokenizer", "special_tokens", "vocab", "merges", "chat_template")
        ):
            (broken / p.name).symlink_to(p)
    out = tmp_path / "o.parquet"
    r = enrich("run", catalog, "-o", out, "--model", broken)
    assert r.exit_code == 5, r.output
    assert f"cannot load its tokenizer from {broken}" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_dry_run_writes_nothing(tiny_model: Path, catalog: Path) -> None:
    before = sorted(p.name for p in catalog.parent.iterdir())
    r = enrich(
        "run",
        catalog,
        "--dry-run",
        "--sample",
        "5",
        "--model",
        tiny_model,
        "--max-new-tokens",
        "4",
        "--log-format",
        "text",
    )
    assert r.exit_code == 0, r.output
    assert "forecast for 200 rows" in r.output and "rows/s" in r.output
    assert sorted(p.name for p in catalog.parent.iterdir()) == before
    ids = pl.read_parquet(catalog)["id"].to_list()
    assert sum(i in r.output for i in ids) >= 3  # the rows are named by their ids, not their positions


def test_cpu_windows_ramp_up_from_a_few_rows(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    """Without --window-rows, a CPU run's first window is 4 rows and each next one twice the last (to 4 x the
    batch size), so the first is saved within about a minute; the output is the same rows in the same order."""
    out = tmp_path / "out.parquet"
    r = enrich("run", catalog, "-o", out, "--limit", "70", "--model", tiny_model, "--max-new-tokens", "2")
    assert r.exit_code == 0, r.output
    journal = [json.loads(line) for line in Path(f"{out}.enrich/parts.jsonl").read_text().splitlines()]
    assert [e["rows"] for e in sorted(journal, key=lambda e: e["index"])] == [4, 8, 16, 32, 10]
    assert pl.read_parquet(out)["id"].to_list() == pl.read_parquet(catalog)["id"].head(70).to_list()


def test_a_run_where_most_rows_are_flagged_says_why_and_what_to_do(
    tiny_model: Path, catalog: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out.parquet"
    r = enrich("run", catalog, "-o", out, "--limit", "8", *tiny_args(tiny_model))
    assert r.exit_code == 0, r.output
    report = json.loads(Path(f"{out}.report.json").read_text())
    assert report["advice"][0] == (
        "8 of 8 rows were cut at the 4-token limit: raise --max-new-tokens, or use a model fine-tuned to end its "
        "descriptions (enrich finetune)"
    )
    assert "were cut at the 4-token limit" in r.output  # in the final log line too


def test_changed_settings_refuse_to_mix(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    state = Path(f"{out}.enrich")
    args = ["run", catalog, "-o", out, "--limit", "40", *tiny_args(tiny_model)]
    assert enrich(*args).exit_code == 0
    # leave a half-finished run behind: a manifest with another fingerprint and no output
    out.unlink()
    manifest = json.loads((state / "manifest.json").read_text())
    manifest.update(fingerprint="0000", complete=False)
    (state / "manifest.json").write_text(json.dumps(manifest))
    r = enrich(*args)
    assert r.exit_code == 2 and "--restart" in r.output
    r = enrich(*args, "--restart")
    assert r.exit_code == 0, r.output
    assert pl.read_parquet(out).height == 40


@pytest.mark.slow
def test_real_embedded_model(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    r = enrich(
        "run",
        catalog,
        "-o",
        out,
        "--limit",
        "8",
        "--max-new-tokens",
        "32",  # 13 words or more from each of these 8 rows
        "--seed",
        "1",
        "--log-format",
        "json",
    )
    assert r.exit_code == 0, r.output
    got = pl.read_parquet(out)
    texts = got["generated_description"].to_list()
    # Each row has a text; a short one only says its title again, and is flagged so.
    assert all(texts)
    short = [f for t, f in zip(texts, got["enrich_flags"].to_list(), strict=True) if len(t.split()) < 10]
    assert all("title_only" in f for f in short), list(zip(texts, got["enrich_flags"].to_list(), strict=True))

    # a real model writes about the product: most texts share a content word with their title
    def overlap(title: str, text: str) -> bool:
        words = {w.lower().strip(",.()") for w in title.split() if len(w) > 3}
        return any(w in text.lower() for w in words)

    # (random weights share a word with their title by chance in about none of 8)
    assert sum(overlap(t, g) for t, g in zip(got["title"], texts, strict=True)) >= 4
    report = json.loads(Path(f"{out}.report.json").read_text())
    # The default on a CPU: the embedded model with the adapter the package ships, prompted as it was trained.
    assert report["model"]["name"] == "smollm2-135m-catalog" and report["model"]["template"] == "alpaca"
    assert [a["label"] for a in report["attributes"]] == ["Brand", "Category"]
    assert report["tokens"]["output"] == got["enrich_output_tokens"].sum()


def test_the_default_model_takes_its_base_for_a_catalog_without_its_attributes(tmp_path: Path) -> None:
    """The default model on a CPU was trained with Brand and Category; a catalog without them gets the base
    model, said in a warning, while a model the user names is refused (exit 2, naming the column to map)."""
    src = tmp_path / "titles.parquet"
    pl.DataFrame({"id": ["a"], "title": ["Cotton T-Shirt, Blue"]}).write_parquet(src)
    out = tmp_path / "out.parquet"
    r = enrich("run", src, "-o", out, "--engine", "echo", "--template", "alpaca", "--log-format", "json")
    assert r.exit_code == 0, r.output
    assert "using smollm2-135m, the base model" in r.output and "--attr COLUMN=Label" in r.output
    assert json.loads(Path(f"{out}.report.json").read_text())["model"]["name"] == "smollm2-135m"
    named = enrich(
        "run", src, "-o", tmp_path / "o2.parquet", "--model", "smollm2-135m-catalog", "--engine", "echo"
    )
    assert named.exit_code == 2, named.output
    assert (
        "no column 'brand' for the attribute 'Brand'" in named.output
        and "--attr COLUMN=Brand" in named.output
    )
    assert "--model smollm2-135m " in named.output


def test_empty_input_gives_every_output_column(tmp_path: Path) -> None:
    """No rows: the output still has the input's columns with their types and enrich's own, so a later
    incremental run can read it; a CSV gets its header."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "zero.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "title": pa.array([], pa.string())}), src)
    echo = ["--engine", "echo", "--template", "alpaca"]
    for out in (tmp_path / "o.parquet", tmp_path / "o.csv"):
        r = enrich("run", src, "-o", out, *echo)
        assert r.exit_code == 0, r.output
        columns = pl.read_csv(out).columns if out.suffix == ".csv" else pq.read_schema(out).names
        assert columns == ["id", "title", *OUTPUT_COLUMNS]
    assert pq.read_schema(tmp_path / "o.parquet").field("title").type == pa.string()
    pq.write_table(pa.table({"id": ["a"], "title": ["Red mug"]}), src)  # a row arrives
    r = enrich("run", src, "-o", tmp_path / "o.parquet", *echo, "--incremental", "--log-format", "json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "o.parquet.report.json").read_text())["counts"]["generated"] == 1


def test_a_finished_run_writes_its_error_file_and_report_where_asked(catalog: Path, tmp_path: Path) -> None:
    """Re-run of an up-to-date output with other --errors/--report paths: nothing is generated, the files are
    written there (JSON lines converted to Parquet) and the earlier ones stay."""
    src, out = tmp_path / "in.parquet", tmp_path / "o.parquet"
    frame = pl.read_parquet(catalog).head(6)
    frame.with_columns(
        pl.when(pl.int_range(6) < 2).then(None).otherwise(pl.col("title")).alias("title")
    ).write_parquet(src)
    echo = ["--engine", "echo", "--template", "alpaca", "--log-format", "json"]
    assert enrich("run", src, "-o", out, *echo).exit_code == 6
    errors, report = tmp_path / "e.parquet", tmp_path / "r.json"
    r = enrich("run", src, "-o", out, *echo, "--errors", errors, "--report", report)
    assert r.exit_code == 6 and "up to date" in r.output, r.output
    before = pl.read_ndjson(f"{out}.errors.jsonl")
    assert (
        pl.read_parquet(errors).select(before.columns).to_dicts() == before.to_dicts() and before.height == 2
    )
    assert json.loads(report.read_text())["errors_file"] == str(errors)


def test_duplicate_ids_are_checked_against_the_ids_not_only_their_hashes(tmp_path: Path) -> None:
    """Two ids whose 64-bit hashes collide must stay two ids: a collision (rows 2 and 5 put in row 0's hash
    group) keeps row 2, whose id differs, and finds row 5, whose id is row 0's; real repeats are found too."""
    from enrich.catalog.prepass import exact_duplicates, prepass
    from enrich.catalog.source import Source

    src = tmp_path / "ids.parquet"
    pl.DataFrame({"id": ["a", "x", "b", "x", "c", "a"], "title": ["t"] * 6}).write_parquet(src)
    catalog = Source.of(str(src))
    assert prepass(catalog, tmp_path / "scratch").duplicates == {3: 1, 5: 0}
    assert exact_duplicates({2: 0, 5: 0}, catalog) == {5: 0}
