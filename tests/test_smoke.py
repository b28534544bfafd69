from pathlib import Path

import polars as pl
from click.testing import CliRunner

from enrich.cli import main


def test_run_tiny_model_end_to_end(tiny_model: Path, catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(
        main,
        [
            "run",
            str(catalog),
            "-o",
            str(out),
            "--model",
            str(tiny_model),
            "--max-new-tokens",
            "4",
            "--limit",
            "30",
            "--window-rows",
            "8",
            "--log-format",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out)
    src = pl.read_parquet(catalog).head(30)
    assert df.height == 30
    assert df["id"].to_list() == src["id"].to_list()
    assert set(df["enrich_status"].unique()) <= {"ok", "flagged"}
