from pathlib import Path

import polars as pl
from _support import enrich


def test_run_tiny_model_end_to_end(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = enrich(
        "run", catalog, "-o", out, "--model", tiny_model, "--max-new-tokens", "4", "--limit", "30",
        "--window-rows", "8", "--log-format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out)
    src = pl.read_parquet(catalog).head(30)
    assert df.height == 30
    assert df["id"].to_list() == src["id"].to_list()
    assert set(df["enrich_status"].unique()) <= {"ok", "flagged"}
