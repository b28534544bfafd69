"""Seeded train / held-out splits of the shared catalogs for `enrich finetune` and `enrich eval`.

    python bench/split.py OUT [--exclude CATALOG]

writes OUT/amazon_{train,test}.parquet (200 held-out rows) and OUT/flipkart_{train,test}.parquet (100 held-out:
the file has 599 rows), each held-out file also without its descriptions as NAME_prompts.parquet, and the whole
Amazon file without descriptions as amazon_all.parquet (a run's speed). Held-out rows are drawn among clean descriptions; a row sharing a title or a description
with a held-out row leaves training, so eval never scores a text the model was trained on. --exclude drops the ids
of CATALOG from training too: the adapter shipped as the CPU default never sees examples/catalog.parquet, the
catalog of the README's main job. Without --exclude the Amazon split is the one of the CPU runs of
bench/RESULTS.md (seed 0).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import polars as pl

from enrich.model.traindata import junk_reason

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CATALOGS = {"amazon": ("amazon_products.parquet", 200), "flipkart": ("flipkart_products.parquet", 100)}


def split(
    source: Path, n_test: int, seed: int = 0, exclude: frozenset[str] = frozenset()
) -> tuple[pl.DataFrame, pl.DataFrame]:
    df = pl.read_parquet(source)
    df = df.drop([c for c in ("description_raw",) if c in df.columns])
    clean = [
        i
        for i, (t, c) in enumerate(zip(df["title"], df["content"], strict=True))
        if junk_reason(t, c, 20) is None
    ]
    test_rows = sorted(random.Random(seed).sample(clean, n_test))
    test = df[test_rows]
    leak = pl.col("title").is_in(test["title"].implode()) | pl.col("content").is_in(test["content"].implode())
    train = df.with_row_index("_i").filter(~pl.col("_i").is_in(test_rows)).drop("_i").filter(~leak)
    if exclude:
        train = train.filter(~pl.col("id").cast(pl.String).is_in(sorted(exclude)))
    return train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--exclude", type=Path, help="a catalog whose ids never go into training")
    args = parser.parse_args()
    exclude = frozenset(pl.read_parquet(args.exclude)["id"].cast(pl.String)) if args.exclude else frozenset()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (file, n_test) in CATALOGS.items():
        train, test = split(DATA / file, n_test, exclude=exclude)
        train.write_parquet(args.out / f"{name}_train.parquet")
        test.write_parquet(args.out / f"{name}_test.parquet")
        # What `enrich run` is given in the measurements: a run checks claims against the existing description
        # too, and eval never shows a model the description it is scored against.
        test.drop("content").write_parquet(args.out / f"{name}_prompts.parquet")
        if name == "amazon":
            pl.read_parquet(DATA / file).drop("content", "description_raw").write_parquet(
                args.out / "amazon_all.parquet"
            )
        print(f"{name}: train {train.height} rows, test {test.height} rows -> {args.out}")


if __name__ == "__main__":
    main()
