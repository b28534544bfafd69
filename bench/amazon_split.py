"""Split the shared Amazon catalog into a training file and 200 held-out rows for `enrich eval` (seeded)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import polars as pl

from enrich.model.traindata import junk_reason

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon_products.parquet"


def main(out: Path, n_test: int = 200, seed: int = 0) -> None:
    """Held-out rows come from clean descriptions; rows sharing a title or description with them leave training."""
    df = pl.read_parquet(SOURCE).drop("description_raw")
    clean = [
        i
        for i, (t, c) in enumerate(zip(df["title"], df["content"], strict=True))
        if junk_reason(t, c, 20) is None
    ]
    test_rows = sorted(random.Random(seed).sample(clean, n_test))
    test = df[test_rows]
    leak = pl.col("title").is_in(test["title"].implode()) | pl.col("content").is_in(test["content"].implode())
    train = df.with_row_index("_i").filter(~pl.col("_i").is_in(test_rows)).drop("_i").filter(~leak)
    out.mkdir(parents=True, exist_ok=True)
    train.write_parquet(out / "amazon_train.parquet")
    test.write_parquet(out / "amazon_test.parquet")
    print(f"train {train.height} rows, test {test.height} rows -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/enrich-amazon"))
