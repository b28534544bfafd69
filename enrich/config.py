"""The job configuration (the model behind schemas/job.schema.json) and the one merge path of every command: a
table, then dotted-path overrides, validated into a config, with every problem listed."""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo

from enrich.contracts import ERROR_FILE_SUFFIXES, FrozenModel, is_parquet
from enrich.errors import ConfigError

FlagPolicy = Literal["keep", "flag", "error"]
# A claim flag can also be answered by generating the row again (policies.candidates candidates).
ClaimPolicy = Literal["keep", "flag", "error", "regenerate"]


# A switch takes true or false only: pydantic's lax mode reads "yes", "off", 1 and 0 as booleans too, so a job file's
# `overwrite = "yes"` (or `--set run.incremental=1`) would pass as a decision that nobody wrote down as one.
Switch = StrictBool


class Columns(FrozenModel):
    id: str | None = Field("id", description="Column holding the product id; null uses the row position.")
    title: str = Field("title", description="Column holding the product title: the prompt's input.")
    content: str | None = Field(
        "content", description="Column holding the existing description (shown in dry runs, used by eval)."
    )


def _separator_character(value: str) -> str:
    """A CSV separator: one character; the two characters \\t stand for a tab (what a shell or TOML passes)."""
    value = "\t" if value == "\\t" else value
    if len(value) != 1 or value in '"\r\n':
        raise ValueError(
            f"separator {value!r}: give one character other than a quote or a line break, e.g. ';' or \\t"
        )
    return value


# The CSV field separator of every config that reads or writes CSV (run, finetune, eval).
CsvSeparator = Annotated[str, AfterValidator(_separator_character)]
SEPARATOR_DESCRIPTION = "CSV only: the field separator, one character (';', '|', \\t for tab)."


_DEVICE = re.compile(r"cpu|cuda(?::\d+)?|mps")
DEVICE_FORMS = "cpu, cuda, cuda:N (N the GPU's index) or mps"


def _torch_device(value: str | None) -> str | None:
    """A torch device name that the transformers engine can be given; checked before any model loads."""
    if value is not None and not _DEVICE.fullmatch(value):
        raise ValueError(f"--device {value!r} is not a device; use {DEVICE_FORMS}")
    return value


class Attribute(FrozenModel):
    """An input column whose value the prompt states under the title, as `Label: value`."""

    column: str = Field(min_length=1, description="The input column.")
    label: str = Field(
        "",
        description="What the prompt calls it; default the column's name in words (retail_price: Retail price).",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        """A bare name stands for the column; COLUMN=Label (the command line's --attr) names its label too."""
        if isinstance(data, str):
            column, _, label = data.partition("=")
            return {"column": column.strip(), "label": label.strip()}
        return data

    def text_label(self) -> str:
        return self.label or self.column.replace("_", " ").strip().capitalize()


def attribute_list(value: Any) -> Any:
    """attributes = ["brand", {column = "colour", label = "Color"}]: names and tables alike."""
    return [Attribute.model_validate(v) for v in value] if isinstance(value, list | tuple) else value


class InputConfig(FrozenModel):
    path: str = Field(description="Catalog file (Parquet or CSV), or a glob of files of one format.")
    format: Literal["auto", "parquet", "csv"] = Field("auto", description="File format; auto goes by suffix.")
    columns: Columns = Field(default_factory=Columns, description="Which input columns play which role.")
    separator: CsvSeparator = Field(",", description=SEPARATOR_DESCRIPTION)
    attributes: Annotated[list[Attribute], BeforeValidator(attribute_list)] = Field(
        default_factory=list,
        description="Columns stated in the prompt under the title (brand, colour, material, price...): names, "
        "or tables with column and label. Default: the ones the model was trained with (its enrich.json).",
    )


class OutputColumns(FrozenModel):
    """The names written for enrich's status columns; the generated text's is output.generated_column."""

    enrich_status: str = Field("enrich_status", min_length=1, description="ok, flagged, error or skipped.")
    enrich_finish_reason: str = Field(
        "enrich_finish_reason", min_length=1, description="Why generation stopped."
    )
    enrich_flags: str = Field("enrich_flags", min_length=1, description="The row's quality flags.")
    enrich_unsupported: str = Field(
        "enrich_unsupported", min_length=1, description="The generated text's unsupported claims, as written."
    )
    enrich_output_tokens: str = Field("enrich_output_tokens", min_length=1, description="Tokens generated.")
    enrich_key: str = Field("enrich_key", min_length=1, description="The content key of incremental runs.")


class OutputConfig(FrozenModel):
    path: str = Field(
        description="Output file; Parquet or CSV by suffix. Every input row and column is kept."
    )
    format: Literal["auto", "parquet", "csv"] = Field("auto", description="File format; auto goes by suffix.")
    separator: CsvSeparator | None = Field(
        None, description="CSV output only: the field separator; default the input's."
    )
    errors: str | None = Field(
        None, description="Error file (JSONL or Parquet); default OUTPUT.errors.jsonl."
    )
    report: str | None = Field(None, description="Run report JSON; default OUTPUT.report.json.")
    overwrite: Switch = Field(False, description="Replace an existing output that this run did not write.")
    generated_column: str = Field(
        "generated_description",
        min_length=1,
        description="Name of the generated text column (rename on a clash).",
    )
    columns: OutputColumns = Field(
        default_factory=OutputColumns,
        description="Names of enrich's other output columns, for an input that already has one of them.",
    )
    only_missing: Switch = Field(
        False,
        description="Generate only for rows whose existing description (input.columns.content) is empty or "
        "shorter than min_chars; the others keep their text (status kept) and cost no generation.",
    )
    min_chars: int = Field(
        1, ge=1, description="With only_missing: a description this long or longer is kept as it is."
    )

    @model_validator(mode="after")
    def _valid_names(self) -> OutputConfig:
        names = list(self.names().values())
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two output columns would be named {twice[0]!r}; give each its own name")
        internal = [n for n in names if n.startswith("__")]
        if internal:  # part files and incremental runs use __row and __hit of their own
            raise ValueError(f"output column name {internal[0]!r}: names starting with __ are enrich's own")
        if self.errors is not None and Path(self.errors).suffix.lower() not in ERROR_FILE_SUFFIXES:
            raise ValueError(f"errors: {self.errors}: an error file is .jsonl, or Parquet (.parquet, .pq)")
        return self

    def errors_path(self) -> Path:
        return Path(self.errors or f"{self.path}.errors.jsonl")

    def errors_parquet(self) -> bool:
        """Whether the error file is Parquet (else JSON lines), by its suffix."""
        return is_parquet(self.errors_path())

    def report_path(self) -> Path:
        return Path(self.report or f"{self.path}.report.json")

    def names(self) -> dict[str, str]:
        """Each output column's standard name (OUTPUT_COLUMNS) -> the name this run writes."""
        return {"generated_description": self.generated_column, **self.columns.model_dump()}


class ModelConfig(FrozenModel):
    ref: str | None = Field(
        None,
        description="Preset name, HF directory, GGUF file, adapter or export directory; "
        "default: smollm2-135m-catalog (the embedded model with the adapter enrich ships) without a GPU, llama-3.1-8b-4bit with one.",
    )
    engine: Literal["auto", "transformers", "vllm", "echo", "ray"] = Field(
        "auto",
        description="auto takes vllm where it is installed and a GPU is present, else transformers; "
        "ray spreads the run over a Ray Data actor pool of ray.engine engines (see [ray]).",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="Weights' dtype.")
    device: Annotated[str | None, AfterValidator(_torch_device)] = Field(
        None,
        description=f"Torch device for the transformers engine: {DEVICE_FORMS}; "
        "default: cuda where a GPU is present, else cpu.",
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM: share of GPU memory to use.")
    max_num_seqs: int | None = Field(
        None,
        ge=1,
        description="vLLM: sequences scheduled at once; default: 2048 on a GPU of 70 GiB or more, else vLLM's own.",
    )
    max_num_batched_tokens: int | None = Field(
        None,
        ge=1,
        description="vLLM: tokens per scheduler step; default: 65536 on a GPU of 70 GiB or more, else vLLM's own.",
    )
    max_model_len: int | None = Field(None, ge=16, description="Context length; default the model's.")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM: GPUs one model is split over.")
    enable_prefix_caching: Switch = Field(
        True, description="vLLM: reuse the KV cache of the shared prompt prefix."
    )
    quantization: str | None = Field(
        None, description="vLLM: quantization method (e.g. fp8); default: none, the weights' own precision."
    )


class PromptConfig(FrozenModel):
    template: Literal["alpaca", "alpaca-pt", "chat"] | None = Field(
        None, description="Prompt template; default: the model's enrich.json, else the preset's."
    )


class SamplingConfig(FrozenModel):
    temperature: float | None = Field(
        None,
        ge=0,
        le=5,
        description="0 is greedy; default: the model's enrich.json, else the preset's (0.7).",
    )
    top_p: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Nucleus sampling; default: the model's enrich.json, else the preset's (0.9).",
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=32768,
        description="Tokens generated at most; default: the model's enrich.json, else the preset's "
        "(128 for smollm2-135m, 256 for llama-3.1-8b-4bit and other models).",
    )
    repetition_penalty: float | None = Field(
        None,
        ge=1,
        le=3,
        description="1 is none; default: the model's enrich.json, else the preset's "
        "(1.1 for smollm2-135m, 1.0 for llama-3.1-8b-4bit and other models).",
    )
    penalty_scope: Literal["all", "output"] | None = Field(
        None,
        description="The tokens a repetition penalty counts: all (the prompt's too, as transformers and vLLM "
        "do) or output (the generated ones only, so a brand or a size stated in the prompt can still be copied; "
        "transformers engine only); default: the model's enrich.json, else the preset's (output for "
        "smollm2-135m-catalog, all otherwise).",
    )
    seed: int = Field(0, ge=0, description="Seed; with the same seed a run is reproducible.")


class BatchConfig(FrozenModel):
    window_rows: int | None = Field(
        None,
        ge=1,
        description="Rows read, prompted and written per window; default: 8192 with vLLM, else 4 x batch_size.",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Prompts per generate call (transformers engine; vLLM batches by itself); default: 16.",
    )


class PolicyConfig(FrozenModel):
    truncated: FlagPolicy = Field("flag", description="Stopped by the token limit.")
    empty: FlagPolicy = Field("error", description="Nothing generated.")
    repetition: FlagPolicy = Field("flag", description="Repeated n-grams above the threshold.")
    template_leak: FlagPolicy = Field("flag", description="Prompt markers in the output.")
    unsupported_claims: ClaimPolicy = Field(
        "flag",
        description="A number (with its unit), colour, material, gender or age group, brand or detail that the "
        "product's title, attributes and existing description do not support; the words are in enrich_unsupported. "
        "regenerate: generate the row again (policies.candidates) and write the first candidate that passes.",
    )
    wrong_type: ClaimPolicy = Field(
        "flag", description="The text names another product type than the facts do."
    )
    off_topic: ClaimPolicy = Field(
        "flag",
        description="The text names neither the product's type, nor its brand, nor a word of its title.",
    )
    title_only: ClaimPolicy = Field(
        "flag",
        description="The text says nothing but the title and brand again (fewer than 3 other content words).",
    )
    candidates: int = Field(
        4,
        ge=1,
        le=64,
        description="With a regenerate policy: the most candidates a flagged row gets, in its window, one a round, "
        "seeded by the window; the first that passes every check is written (status regenerated), else the text "
        "with the fewest unsupported words, flagged.",
    )
    max_title_chars: int = Field(2000, ge=1, description="Longest title accepted.")
    long_title: Literal["truncate", "error"] = Field(
        "truncate", description="What to do with a longer title."
    )
    invalid_row: Literal["error", "skip"] = Field(
        "error", description="A row with a null or empty title or id: to the error file, or skipped."
    )
    duplicate_id: Literal["error", "skip", "keep"] = Field(
        "error", description="A repeated id after its first row: error file, skipped, or generated anyway."
    )

    @model_validator(mode="before")
    @classmethod
    def _earlier_name(cls, data: Any) -> Any:
        """unsupported_numbers, the flag's name before it checked more than numbers, still sets its policy."""
        if isinstance(data, dict) and "unsupported_numbers" in data:
            data = dict(data)
            data.setdefault("unsupported_claims", data.pop("unsupported_numbers"))
        return data


class ClaimsConfig(FrozenModel):
    """Changes to the vocabulary of claims: the packaged word lists and the terms the model learned from its
    catalog (enrich claims show MODEL lists them)."""

    add: dict[Literal["colour", "material", "group", "detail", "brand", "type"], list[str]] = Field(
        default_factory=dict,
        description="Terms to check as claims, by kind: colour, material, group, detail, brand, or type (a "
        "product type, for wrong_type).",
    )
    remove: list[str] = Field(default_factory=list, description="Terms never to count as claims.")


class RunConfig(FrozenModel):
    state_dir: str | None = Field(None, description="Resume state; default OUTPUT.enrich/ beside the output.")
    restart: Switch = Field(
        False,
        description="Discard any saved resume state and start over (needed when settings or input changed).",
    )
    limit: int | None = Field(None, ge=1, description="Process only the first N rows; default: every row.")
    incremental: Switch = Field(
        False, description="Copy rows whose content key is unchanged from the previous output."
    )
    log_format: Literal["auto", "text", "json"] = Field("auto", description="auto: json when not a terminal.")
    log_every_s: float = Field(10.0, gt=0, description="Seconds between JSON progress lines.")
    history_dir: str | None = Field(
        None, description="Folder keeping one report per run (cron history); default: none, no history kept."
    )
    dry_run: Switch = Field(
        False, description="Generate for a sample, print it with a forecast; write nothing."
    )
    sample: int = Field(20, ge=1, description="Rows in a dry run's seeded random sample.")
    decisions: str | None = Field(
        None,
        description="A decisions file saved from the review page (OUTPUT.decisions.jsonl): with incremental, "
        "rejected rows are generated again with a new seed and approved rows are kept as they are; a decision whose "
        "row changed since the review is reported and ignored. Default: none.",
    )
    review: Switch = Field(
        True, description="Write OUTPUT.review.html at the end (enrich review OUTPUT does too)."
    )


class RayConfig(FrozenModel):
    workers: int = Field(
        1, ge=1, description="Engines in the actor pool (model.engine = ray): one per GPU or CPU worker."
    )
    engine: Literal["auto", "transformers", "vllm", "echo"] = Field(
        "auto",
        description="The engine each worker runs; auto as in model.engine (set vllm where the driver has no GPU).",
    )
    gpus_per_worker: float | None = Field(
        None,
        ge=0,
        description="GPUs each worker holds; default 1 with vllm (tensor_parallel_size with it), else 0.",
    )
    cpus_per_worker: float = Field(
        1.0, gt=0, description="CPUs each worker holds (torch threads on CPU workers)."
    )
    start_timeout_s: float = Field(
        900.0,
        gt=0,
        description="Seconds for every worker to start its engine before the first window goes out; "
        "exit 5 when the cluster cannot start them all.",
    )
    address: str | None = Field(
        None,
        description="Ray cluster to join (auto, or ray://host:10001); default: start a local Ray on this machine.",
    )


class JobConfig(FrozenModel):
    input: InputConfig
    output: OutputConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    policies: PolicyConfig = Field(default_factory=PolicyConfig)
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig, description="What counts as a claim.")
    run: RunConfig = Field(default_factory=RunConfig)
    ray: RayConfig = Field(
        default_factory=RayConfig, description="Scale-out on Ray Data (model.engine = ray)."
    )

    @model_validator(mode="after")
    def _supported(self) -> JobConfig:
        if self.model.engine == "ray" and self.run.incremental:
            raise ValueError(
                "run.incremental: incremental runs are not spread over Ray yet; drop one of the two"
            )
        return self

    def output_separator(self) -> str:
        """A CSV output's field separator: output.separator, else the input's."""
        return self.output.separator or self.input.separator


def _table_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model of the table at loc (a dotted path as a tuple), or None where loc leaves the models."""
    for key in loc:
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        annotation = field.annotation
        nested = [
            a for a in (annotation, *get_args(annotation)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not nested:
            return None
        model = nested[0]
    return model


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the table at loc (a validation error's path), or [] where loc leaves the models."""
    table = _table_at(model, loc)
    return list(table.model_fields) if table else []


def job_field(dotted: str) -> FieldInfo:
    """The job file's field at a dotted path (sampling.temperature): its description and default, for --help."""
    *parents, name = dotted.split(".")
    table = _table_at(JobConfig, tuple(parents))
    if table is None or name not in table.model_fields:
        raise KeyError(f"no job field {dotted!r}")
    return table.model_fields[name]


def _unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """An unknown key's message, with the closest valid name at its level (a typo), else every valid name."""
    name, valid = str(loc[-1]), _fields_at(model, loc[:-1])
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"unknown field {name!r}; did you mean {close[0]!r}?"
    return f"unknown field {name!r}; valid here: {', '.join(valid)}" if valid else f"unknown field {name!r}"


def _format_errors(source: str, err: ValidationError, model: type[BaseModel]) -> str:
    """Every validation problem, a line each: source, the field's dotted path, and what is wrong with it."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        # A validator's own sentence, without pydantic's label.
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = _unknown_field(model, e["loc"])
        if e["type"] == "bool_type":
            message = f"expected true or false (unquoted), not {e['input']!r}"
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)


M = TypeVar("M", bound=BaseModel)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set data['a']['b'] = value for 'a.b', creating tables on the way."""
    *parents, leaf = dotted.split(".")
    for depth, key in enumerate(parents):
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            field = ".".join(parents[: depth + 1])
            raise ConfigError(f"--set {dotted}: {field} is a value, not a table; set {field}=VALUE")
    data[leaf] = value


def build_config(
    model: type[M], table: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "options"
) -> M:
    """The merge path of every command: a table (a job file, a preset's values), then the dotted-path overrides
    that are set (the command line wins), validated once. Raises ConfigError listing every problem, a line each
    starting with source and the field's dotted path."""
    merged: dict[str, Any] = copy.deepcopy(table)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            set_dotted(merged, dotted, value)
    try:
        return model.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_errors(source, err, model)) from None


def build_job(
    data: dict[str, Any], overrides: dict[str, Any] | None = None, source: str = "options"
) -> JobConfig:
    """A job table with dotted-path overrides (the command line) merged over it, validated once."""
    return build_config(JobConfig, data, overrides, source)
