"""`enrich eval`: the metrics on real descriptions, the report files, and bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pytest
from _support import CATALOG, enrich

from enrich.config import ModelConfig, SamplingConfig
from enrich.evaluation.faithfulness import attribute_coverage, states
from enrich.evaluation.metrics import rouge_l, score
from enrich.model import engines
from enrich.model.engines import prompt_side, resolve_sampling
from enrich.model.generation import Generation, Progress, Sampling
from enrich.model.prompts import attribute_text, product_block
from enrich.model.reference import ModelSpec
from enrich.quality.claims import facts, faithful
from enrich.quality.flags import FLAGS
from enrich.quality.vocabulary import base_vocabulary

CLAIMS_ROWS = Path(__file__).resolve().parent / "data" / "claims_rows.parquet"
TRAINED_WITH = [
    {"column": "brand", "label": "Brand"},
    {"column": "fabric", "label": "Fabric"},
    {"column": "neck", "label": "Neck"},
    {"column": "retail_price", "label": "Price"},
]


def real_descriptions(n: int) -> list[str]:
    return pl.read_parquet(CATALOG)["content"].head(n).to_list()


def test_metrics_on_real_descriptions() -> None:
    refs = real_descriptions(20)
    same = score(refs, refs, ["stop"] * 20, [[]] * 20, [50] * 20)
    assert same["rouge_l"] == 1.0 and same["chrf"] == 100.0 and same["bleu"] == 100.0
    assert same["length_ratio"] == 1.0 and same["eos_rate"] == 1.0
    shifted = refs[1:] + refs[:1]  # every row scored against another product's description
    other = score(shifted, refs, ["stop"] * 10 + ["length"] * 10, [["truncated"]] * 10 + [[]] * 10, [50] * 20)
    assert other["rouge_l"] < 0.3 and other["chrf"] < 40 and other["bleu"] < 10
    assert other["eos_rate"] == 0.5 and other["flag_rates"]["truncated"] == 0.5
    # A half-right description scores between the two.
    halves = [r[: len(r) // 2] for r in refs]
    assert other["rouge_l"] < rouge_l(halves, refs) < 1.0


def test_unset_sampling_fields_take_the_models_own() -> None:
    own = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 128, "repetition_penalty": 1.1}
    spec = ModelSpec("m", "m", "/m", None, "chat", None, (), "m", own)
    assert resolve_sampling(SamplingConfig(), spec) == Sampling(0.7, 0.9, 128, 1.1, 0)
    chosen = SamplingConfig(temperature=0, max_new_tokens=6, seed=3)
    assert resolve_sampling(chosen, spec) == Sampling(0.0, 0.9, 6, 1.1, 3)


def test_eval_writes_report_plot_and_summary(tiny_model: Path, tmp_path: Path) -> None:
    csv = tmp_path / "holdout.csv"
    pl.read_parquet(CATALOG).head(12).rename({"title": "name", "content": "body", "id": "sku"}).write_csv(csv)
    out = tmp_path / "eval"
    r = enrich(
        "eval",
        tiny_model,
        csv,
        "-o",
        out,
        "--title-col",
        "name",
        "--content-col",
        "body",
        "--id-col",
        "sku",
        "--sample",
        "5",
        "--seed",
        "3",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
        "--log-format",
        "json",
    )
    assert r.exit_code == 0, r.output
    report = json.loads((out / "eval_report.json").read_text())
    m = report["models"]["model"]
    for key in ("rouge_l", "chrf", "bleu", "eos_rate", "length_ratio"):
        assert isinstance(m[key], float), key
    assert set(m["flag_rates"]) == set(FLAGS)  # every flag a run knows, each with its rate
    assert m["sampling"]["temperature"] == 0.0 and m["sampling"]["max_new_tokens"] == 6
    # Faithfulness without attributes: claims against the title alone, nothing to cover.
    assert isinstance(m["unsupported_claim_rate"], float) and len(m["claim_rates"]) == 6
    assert m["attribute_coverage"] is None and m["attribute_coverage_by_label"] == {}
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[0])["id"].startswith("amz18-")
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ROUGE-L F1 |" in (out / "summary.md").read_text()


def test_eval_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    r = enrich("eval", tiny_model, CATALOG, "-o", tmp_path / "e", "--content-col", "body")
    assert r.exit_code == 3 and "no column 'body'" in r.output
    r = enrich("eval", tiny_model, CATALOG, "-o", tmp_path / "e", "--sample", "0")
    assert r.exit_code == 2 and "sample" in r.output
    r = enrich("eval", tmp_path / "nowhere", CATALOG, "-o", tmp_path / "e")
    assert r.exit_code == 2 and "nowhere" in r.output
    # a baseline that does not resolve fails before the model generates anything
    r = enrich(
        "eval",
        tiny_model,
        CATALOG,
        "-o",
        tmp_path / "e",
        "--baseline",
        tmp_path / "gone",
        "--log-format",
        "text",
    )
    assert r.exit_code == 2 and "baseline:" in r.output and "--no-baseline" in r.output, r.output
    assert "generating" not in r.output and not (tmp_path / "e").exists()


@pytest.fixture()
def holdout(tmp_path: Path) -> Path:
    """The 25 Flipkart and 16 Amazon rows of tests/data with their brand, fabric, neck and price (a float
    column, as Parquet catalogs hold prices); Amazon rows have a brand only."""
    frame = pl.read_parquet(CLAIMS_ROWS).select(
        "id", "title", "content", "brand", "fabric", "neck", "retail_price"
    )
    path = tmp_path / "holdout.parquet"
    frame.with_columns(pl.col("retail_price").cast(pl.Float64)).write_parquet(path)
    return path


@pytest.fixture()
def trained(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model as if fine-tuned with --attr brand --attr fabric --attr neck --attr retail_price=Price."""
    model = tmp_path / "trained"
    shutil.copytree(tiny_model, model)
    info = json.loads((model / "enrich.json").read_text())
    (model / "enrich.json").write_text(json.dumps({**info, "attributes": TRAINED_WITH}))
    return model


class Recorder:
    """Stands in for the transformers engine at eval's edge: the real tokenizer, each model's prompts kept and
    answered as the test says (by default with a fixed sentence)."""

    name = "recorder"
    prompts: ClassVar[dict[str, list[str]]] = {}
    answers: ClassVar[dict[str, Callable[[str], str]]] = {}

    def __init__(self, spec: ModelSpec, config: ModelConfig, batch_size: int) -> None:
        self.ref = spec.ref
        self.tokenizer = prompt_side("transformers", spec, config).tokenizer
        self.max_model_len = 2048

    def generate(
        self, prompts: Sequence[str], sampling: Sampling, on_progress: Progress | None = None
    ) -> list[Generation]:
        self.prompts[self.ref] = list(prompts)
        answer = self.answers.get(self.ref, lambda prompt: "A product for everyday use.")
        return [Generation(answer(p), "stop", 1, 1) for p in prompts]

    def close(self) -> None:
        pass


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    monkeypatch.setitem(engines.ENGINES, "transformers", Recorder)
    monkeypatch.setattr(Recorder, "prompts", {})
    monkeypatch.setattr(Recorder, "answers", {})
    return Recorder


def eval_args(model: Path, data: Path, out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "eval", model, data, "-o", out, "--engine", "transformers", "--sample", "100", "--max-new-tokens", "6",
        "--temperature", "0", "--log-format", "json", *extra,
    ]  # fmt: skip


def generations(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]


def test_both_models_are_prompted_with_the_trained_attributes(
    recorder: type[Recorder], trained: Path, tiny_model: Path, holdout: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    r = enrich(*eval_args(trained, holdout, out, "--baseline", tiny_model))
    assert r.exit_code == 0, r.output
    report = json.loads((out / "eval_report.json").read_text())
    assert report["attributes"] == TRAINED_WITH and report["rows"] == 41
    rows = generations(out)
    first = rows[0]
    assert first["title"] == "Alisha Solid Women's Cycling Shorts"
    # Stated as runs state them: the price column's 999.0 as 999, the null neck left out.
    assert first["attributes"] == [["Brand", "Alisha"], ["Fabric", "Cotton Lycra"], ["Price", "999"]]
    assert rows[-1]["attributes"] == [["Brand", "Brause"]]  # an Amazon row: its brand alone
    for ref in (str(trained), str(tiny_model)):
        prompts = recorder.prompts[ref]
        assert len(prompts) == 41
        for row, prompt in zip(rows, prompts, strict=True):
            block = product_block(row["title"], [(label, value) for label, value in row["attributes"]])
            assert f"Describe the following product in detail.\n\n{block}<|im_end|>" in prompt


def test_an_input_without_a_trained_attribute_is_refused(
    recorder: type[Recorder], trained: Path, holdout: Path, tmp_path: Path
) -> None:
    frame = pl.read_parquet(holdout).rename({"fabric": "material"})
    frame.write_parquet(holdout)
    r = enrich(*eval_args(trained, holdout, tmp_path / "e", "--no-baseline"))
    assert r.exit_code == 2, r.output
    assert "no column 'fabric' for the attribute 'Fabric' that the model was trained with" in r.output
    assert "--attr COLUMN=Fabric" in r.output and not recorder.prompts
    r = enrich(*eval_args(trained, holdout, tmp_path / "e", "--no-baseline", "--attr", "colour=Colour"))
    assert r.exit_code == 2 and "was trained with the attributes Brand, Fabric, Neck, Price" in r.output
    # Mapped to another column, both of the model's attributes are stated.
    r = enrich(*eval_args(trained, holdout, tmp_path / "e", "--no-baseline", "--attr", "material=Fabric"))
    assert r.exit_code == 0, r.output
    assert generations(tmp_path / "e")[0]["attributes"][1] == ["Fabric", "Cotton Lycra"]


def test_coverage_states_values_as_numbers_and_normalised_words() -> None:
    said = facts("Soft cotton-lycra shorts with a round neck, priced at Rs. 1,499 for a pack of three")
    assert states("Cotton Lycra", said) and states("Round Neck", said)
    assert states(attribute_text(1499.0) or "", said) and states("1499.0", said)  # a float column, as text
    assert states("Pack of 3", said) and states("Women's", facts("for women"))
    assert states("Round Neck", facts("a crew neck tee"))  # a synonym
    assert not states("Cotton Lycra", facts("pure cotton shorts")) and not states("1499", facts("Rs. 14,990"))
    assert states("No", said) is None  # nothing to state: the row does not count for the attribute
    texts = ["Cotton lycra shorts, Rs. 1,499.", "Round-neck cotton tee.", "A tee."]
    rows: list[list[tuple[str, str]]] = [
        [("Fabric", "Cotton Lycra"), ("Price", "1499")],
        [("Fabric", "Cotton Lycra"), ("Neck", "Round Neck")],
        [("Neck", "Round Neck")],
    ]
    coverage = attribute_coverage(texts, rows, ["Fabric", "Neck", "Price", "Brand"])
    assert coverage == {"Fabric": 0.5, "Neck": 0.5, "Price": 1.0, "Brand": None}


def echo(prompt: str) -> str:
    """A faithful stand-in model: the product block of the prompt (title and attribute lines) as sentences."""
    block = prompt.split("Describe the following product in detail.\n\n", 1)[1].split("<|im_end|>", 1)[0]
    return block.replace("\n", ". ") + "."


def test_faithfulness_of_model_and_baseline(
    recorder: type[Recorder], trained: Path, tiny_model: Path, holdout: Path, tmp_path: Path
) -> None:
    # A term the model learned from its catalog (claims.json) counts as a claim for both models.
    learned = base_vocabulary().with_changes({"detail": ["zigzag yoke"]})
    (trained / "claims.json").write_text(learned.to_json())
    recorder.answers[str(trained)] = echo
    recorder.answers[str(tiny_model)] = lambda prompt: (
        "A lovely dress in purple silk with a zigzag yoke, a set of 47."
    )
    out = tmp_path / "eval"
    r = enrich(*eval_args(trained, holdout, out, "--baseline", tiny_model))
    assert r.exit_code == 0, r.output
    models = json.loads((out / "eval_report.json").read_text())["models"]
    model, baseline = models["model"], models["baseline"]
    for m in (model, baseline):
        assert set(m["claim_rates"]) == {"number", "colour", "material", "group", "brand", "detail"}
        assert set(m["attribute_coverage_by_label"]) == {"Brand", "Fabric", "Neck", "Price"}
        assert isinstance(m["wrong_type_rate"], float) and isinstance(m["off_topic_rate"], float)
    # The echo states every value it was given and claims nothing beyond them.
    assert model["attribute_coverage"] == 1.0 and set(model["attribute_coverage_by_label"].values()) == {1.0}
    assert model["unsupported_claim_rate"] == 0.0 and model["off_topic_rate"] == 0.0
    assert baseline["attribute_coverage"] == 0.0
    assert baseline["unsupported_claim_rate"] == 1.0 and baseline["claim_rates"]["colour"] == 1.0
    assert baseline["claim_rates"]["material"] == 1.0 and baseline["claim_rates"]["number"] == 1.0
    assert baseline["claim_rates"]["detail"] == 1.0
    assert baseline["off_topic_rate"] > 0.5  # a dress for tape, shorts and watches
    rows = generations(out)
    assert all(row["model"]["unsupported"] == [] for row in rows)
    assert rows[0]["baseline"]["unsupported"] == ["purple", "silk", "zigzag yoke", "47"]
    assert rows[0]["baseline"]["claims"] == [
        ["colour", "purple"],
        ["material", "silk"],
        ["detail", "zigzag yoke"],
        ["number", "47"],
    ]
    summary = (out / "summary.md").read_text()
    assert "| rows with an unsupported claim | 0.0% | 100.0% |" in summary
    assert "| unsupported claim: colour | 0.0% | 100.0% |" in summary
    assert "| attribute coverage | 100.0% | 0.0% |" in summary
    assert "| attribute coverage: Fabric | 100.0% | 0.0% |" in summary
    assert "(unsupported: purple, silk, zigzag yoke, 47)" in summary
    # The page marks the baseline's unsupported words beside the model's faithful text.
    shown = page_data((out / "eval.html").read_text())["rows"]
    assert all(row["roles"]["baseline"]["unsupported"][:2] == ["purple", "silk"] for row in shown)
    assert all(row["roles"]["model"]["unsupported"] == [] for row in shown)
    assert (out / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_faithful_references_are_cut_to_what_the_facts_support(
    recorder: type[Recorder], trained: Path, holdout: Path, tmp_path: Path
) -> None:
    recorder.answers[str(trained)] = echo
    out = tmp_path / "both"
    r = enrich(*eval_args(trained, holdout, out, "--no-baseline", "--references", "both"))
    assert r.exit_code == 0, r.output
    report = json.loads((out / "eval_report.json").read_text())
    model = report["models"]["model"]
    assert report["references"] == "both"
    for key in ("rouge_l", "chrf", "bleu"):
        assert isinstance(model[key], float) and isinstance(model[f"faithful_{key}"], float)
    rows = generations(out)
    vocabulary = base_vocabulary()
    for row in rows:
        known = facts(row["title"], [(label, value) for label, value in row["attributes"]])
        assert row["faithful_reference"] == faithful(row["reference"], known, vocabulary).text.strip()
    cut = [row for row in rows if row["faithful_reference"] != row["reference"]]
    assert report["faithful_references"] == {
        "cut": len(cut),
        "empty": sum(1 for row in rows if not row["faithful_reference"]),
    }
    # The first row's reference is one run-on sentence of specifications naming colours (Navy, Red) that neither
    # its title nor its attributes state: nothing is left, and the row is not scored against it.
    assert "Navy, Red" in rows[0]["reference"] and rows[0]["faithful_reference"] == ""
    # The second keeps the clause its facts support: the one without "30 days", "Synthetic", "Wedge"...
    kept = rows[1]["faithful_reference"]
    assert kept and kept in rows[1]["reference"] and "Synthetic" not in kept
    assert len(cut) > 20
    # faithful alone: the text metrics are the faithful ones, named so.
    r = enrich(*eval_args(trained, holdout, tmp_path / "f", "--no-baseline", "--references", "faithful"))
    assert r.exit_code == 0, r.output
    model = json.loads((tmp_path / "f" / "eval_report.json").read_text())["models"]["model"]
    assert "rouge_l" not in model and model["faithful_rouge_l"] > 0
    summary = (tmp_path / "f" / "summary.md").read_text()
    assert "| ROUGE-L F1, faithful references |" in summary and "| ROUGE-L F1 |" not in summary


def page_data(html: str) -> dict[str, Any]:
    """The rows embedded in an eval page (its JSON script)."""
    tag = '<script type="application/json" id="data">'
    start = html.index(tag) + len(tag)
    data: dict[str, Any] = json.loads(html[start : html.index("</script>", start)])
    return data


def test_eval_on_real_rows_writes_its_review_page(
    greedy_model: Path, tiny_model: Path, holdout: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    attrs = ("--attr", "brand", "--attr", "fabric", "--attr", "retail_price=Price")
    r = enrich(*eval_args(greedy_model, holdout, out, "--baseline", tiny_model, "--sample", "12", *attrs))
    assert r.exit_code == 0, r.output
    assert f"review page: {out / 'eval.html'}" in r.output
    report = json.loads((out / "eval_report.json").read_text())
    assert [a["label"] for a in report["attributes"]] == ["Brand", "Fabric", "Price"]
    for m in report["models"].values():
        assert 0.0 <= m["unsupported_claim_rate"] <= 1.0 and len(m["claim_rates"]) == 6
        assert set(m["attribute_coverage_by_label"]) == {"Brand", "Fabric", "Price"}
    html = (out / "eval.html").read_text()
    for label in ("ROUGE-L F1", "rows with an unsupported claim", "unsupported claim: colour", "off topic"):
        assert f"<td>{label}</td>" in html, label
    assert "<td>attribute coverage: Price</td>" in html and "Price (retail_price)" in html
    data = page_data(html)
    assert [role for role, _ in data["roles"]] == ["model", "baseline"] and len(data["rows"]) == 12
    rows = {row["id"]: row for row in generations(out)}
    for shown in data["rows"]:
        row = rows[shown["id"]]
        assert shown["attrs"] == row["attributes"]
        for role in ("model", "baseline"):
            assert shown["roles"][role]["unsupported"] == row[role]["unsupported"]
    r = enrich(
        *eval_args(greedy_model, holdout, tmp_path / "quiet", "--no-baseline", "--sample", "3", "--no-review")
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "quiet" / "eval_report.json").is_file() and not (
        tmp_path / "quiet" / "eval.html"
    ).exists()


def test_eval_replaces_only_the_files_of_an_earlier_eval(tiny_model: Path, tmp_path: Path) -> None:
    """-o may name a folder with an earlier eval's files (replaced); a file of the same name that enrich did not
    write is refused before any model loads (exit 2, nothing written), unless --overwrite."""
    holdout = tmp_path / "holdout.parquet"
    pl.read_parquet(CATALOG).head(6).write_parquet(holdout)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "summary.md").write_text("my notes\n")
    args = (
        "eval",
        tiny_model,
        holdout,
        "-o",
        out,
        "--sample",
        "3",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
    )
    refused = enrich(*args)
    assert refused.exit_code == 2, refused.output
    assert f"{out / 'summary.md'}: exists and enrich did not write it" in refused.output
    assert "--overwrite" in refused.output and "Traceback" not in refused.output
    assert sorted(p.name for p in out.iterdir()) == ["summary.md"]
    assert (out / "summary.md").read_text() == "my notes\n"
    assert enrich(*args, "--overwrite").exit_code == 0
    assert (out / "summary.md").read_text() != "my notes\n" and (out / "eval_report.json").is_file()
    again = enrich(*args)  # the folder is an earlier eval's now: its files are replaced without --overwrite
    assert again.exit_code == 0, again.output
    (out / "eval.html").write_text("<p>my page</p>")
    page = enrich(*args)
    assert page.exit_code == 2 and f"{out / 'eval.html'}: exists and enrich did not write it" in page.output
    assert (out / "eval.html").read_text() == "<p>my page</p>"
