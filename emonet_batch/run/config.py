"""A scoring run's configuration: what to score where, with which model, grouped by concern; and every option of a
run, defined once in OPTIONS: its flag, type, help, group, and whether it shapes the labels or goes into the manifest.
Its default is its config field's.

Generated from OPTIONS: the flags of `score` and `rescore` (cli.py), the names `score_config` and the nightly config
accept, the label options an output records (`_label_options.json`) with the flag each refusal names, the manifest's
`options`, and the reference docs/cli.md. Adding an option is one entry there, its config field and the code that
uses it.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import click

from ..errors import UsageError
from ..job.config import (
    EMBEDDINGS,
    IMAGES,
    THREADED_TOWER_MIN_CALL_S,
    EngineOptions,
    LabelOptions,
    StorageOptions,
)


@dataclass(frozen=True)
class Presentation:
    """What the operator sees during and after a run."""

    progress: str = "auto"  # auto | bar | log | off
    stats: bool = True  # write <output>/stats/ after the run
    report: bool = True  # and <output>/stats/report.html (needs stats)
    gallery: int = 6  # report: highest-scoring images shown per emotion (0: none)
    verbose: bool = False  # show Ray's own warnings and its workers' logs


@dataclass(frozen=True)
class ScoreConfig:
    inputs: tuple[str, ...]
    output: str
    model: str
    labels: LabelOptions = field(default_factory=LabelOptions)
    engine: EngineOptions = field(default_factory=EngineOptions)
    presentation: Presentation = field(default_factory=Presentation)
    storage: StorageOptions = field(default_factory=StorageOptions)
    overwrite: bool = False  # start afresh: remove what earlier runs wrote first
    repair: bool = False  # redo the shards whose files differ from their commit records
    max_error_rate: float = 0.01  # exit 3 above this share of error rows
    allow_inaccurate_model: bool = False  # score with a model whose recorded error exceeds the limits
    strict_meta: bool = False  # a --meta-fields name no scored sample has makes the run fail (exit 1)
    #: what `inputs` are: image shards ("images"), or one output scored with --embedding whose stored embeddings a
    #: heads-only model reads ("embeddings": `emonet-batch rescore`)
    reads: str = IMAGES


#: The config each group's options are fields of ("run": the ScoreConfig itself).
GROUPS = {
    "labels": LabelOptions,
    "engine": EngineOptions,
    "presentation": Presentation,
    "storage": StorageOptions,
    "run": ScoreConfig,
}


@dataclass(frozen=True)
class Option:
    """One option. `kind`: flag | int | float | text | choice | list (comma-separated on the command line);
    `negated`: a flag that turns a default-on option off (--no-stats sets stats false)."""

    name: str
    group: str
    help: str
    kind: str = "flag"
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    required: bool = False
    negated: bool = False
    labels: bool = False  # shapes the label files: recorded in _label_options.json, required of later runs
    manifest: bool = False  # listed in manifest.json's `options`
    commands: tuple[str, ...] = ("score", "rescore")
    command_defaults: dict[str, Any] = field(default_factory=dict)  # a command's own default, where it differs

    @property
    def flag(self) -> str:
        return "--" + ("no-" if self.negated else "") + self.name.replace("_", "-")

    @property
    def flag_name(self) -> str:
        """The flag's name as click and the nightly config give it (no_stats for --no-stats)."""
        return self.flag[2:].replace("-", "_")

    def click_type(self) -> click.ParamType:
        """The type that converts and checks this option's value, on the command line and in a config file; a list
        is comma-separated text there."""
        if self.kind == "int":
            return click.IntRange(min=self.low, max=self.high)
        if self.kind == "float":
            return click.FloatRange(min=self.low, max=self.high)
        if self.kind == "choice":
            return click.Choice(list(self.choices))
        return click.BOOL if self.kind == "flag" else click.STRING

    def default(self, command: str = "score") -> Any:
        if command in self.command_defaults:
            return self.command_defaults[command]
        (config_field,) = [f for f in fields(GROUPS[self.group]) if f.name == self.name]
        if config_field.default is not MISSING:
            return config_field.default
        return None if config_field.default_factory is MISSING else config_field.default_factory()


OPTIONS = (
    Option("output", "run", "Output directory or URL (s3://bucket/prefix, gs://..., a path).", "text",
           metavar="URL", required=True),
    Option("model", "run", "Exported model directory (emonet-batch export), or its URL (s3://, gs://, any fsspec URL): "
           "each node downloads it once into --model-cache and verifies its hashes.", "text", metavar="DIR|URL",
           required=True),
    Option("model_cache", "storage", "Where each node keeps models fetched from a URL "
           "[default: ~/.cache/emonet-batch/models].", "text", metavar="DIR"),
    Option("workers", "engine", "Inference actors. Default: one per GPU when --gpus-per-worker, else 1 (rescore: one "
           "per CPU).", "int", low=1, manifest=True),
    Option("threads_per_worker", "engine", "ONNX Runtime threads per CPU actor. Default: the CPUs of its node / the "
           "actors on that node (the tower one, when its calls take under "
           f"{THREADED_TOWER_MIN_CALL_S * 1000:g} ms).", "int", low=1),
    Option("wait_for_resources", "engine", "On a cluster (RAY_ADDRESS) without the GPUs (or CPUs) the actors need: "
           "ask its autoscaler for them and wait this long (0: fail at once).", "float", low=0, metavar="SECONDS"),
    Option("centered", "labels", "Add <head>_centered columns (raw - neutral mean).", labels=True, manifest=True),
    Option("softmax", "labels", "Add <head>_softmax columns.", labels=True, manifest=True),
    Option("embedding", "labels", "Add the embedding column (fixed-size list of float32).", labels=True,
           manifest=True),
    Option("overwrite", "run", "Start afresh: remove labels, errors, commits and manifest first."),
    Option("repair", "run", "Redo the shards whose files differ from their commit records (see verify)."),
    Option("max_error_rate", "run", "Exit 3 when errors / samples exceeds this.", "float", low=0, high=1,
           manifest=True),
    Option("endpoint_url", "storage", "S3-compatible endpoint (credentials come from the environment).", "text",
           metavar="URL"),
    Option("progress", "presentation", "auto: a live line on a terminal, log lines otherwise.", "choice",
           choices=("auto", "bar", "log", "off")),
    Option("verbose", "presentation", "Also show Ray's warnings and its workers' logs (quiet by default)."),
    Option("stats", "presentation", "Do not write OUTPUT/stats/ (nor the report) after the run.", negated=True),
    Option("report", "presentation", "Do not write OUTPUT/stats/report.html after the run.", negated=True),
    Option("gallery", "presentation", "Report: highest-scoring images per emotion, read back from the shards "
           "(0: none).", "int", low=0),
    Option("batch_size", "engine", "Rows per inference call: images (score), or embeddings (rescore, which reads its "
           "source in blocks of as many).", "int", low=1, manifest=True, command_defaults={"rescore": 1024}),
    Option("decode_batch_size", "engine", "Images per decode call, and per block out of a read task.", "int", low=1,
           commands=("score",)),
    Option("gpus_per_worker", "engine", "GPUs per inference actor (fractions share a GPU); 0 runs on CPU.", "float",
           low=0, manifest=True, commands=("score",)),
    Option("execution_provider", "engine", "ONNX Runtime provider of GPU actors (needs --gpus-per-worker). Default: "
           "cuda; tensorrt builds engines once into --trt-cache.", "choice", choices=("cuda", "tensorrt"),
           commands=("score",)),
    Option("trt_precision", "engine", "Reduced precision TensorRT may use (needs --execution-provider tensorrt): "
           "fp16 (the default) for an fp16 export, bf16 (Ampere and newer) for an fp32 export.", "choice",
           choices=("fp16", "bf16", "fp32"), commands=("score",)),
    Option("trt_cache", "engine", "TensorRT engine and timing cache on each node. Default: "
           "~/.cache/emonet-batch/tensorrt.", "text", metavar="DIR", commands=("score",)),
    Option("allow_inaccurate_model", "run", "Score with a reduced-precision model whose recorded error against fp32 "
           "exceeds the documented limits.", commands=("score",)),
    Option("meta_fields", "labels", "Fields of each sample's json to copy into label columns.", "list",
           metavar="A,B,...", labels=True, manifest=True, commands=("score",)),
    Option("strict_meta", "run", "Fail (exit 1) when a --meta-fields name is in no scored sample.",
           commands=("score",)),
    Option("max_pixels", "labels", "Refuse larger images.", "int", low=1, manifest=True, commands=("score",)),
    Option("key_column", "labels", "Parquet shards: the column holding each sample's key.", "text", metavar="NAME",
           labels=True, manifest=True, commands=("score",)),
    Option("accept_truncated", "labels", "Commit a tar shard that ends early, in the same place on two reads, with "
           "its readable samples and one `truncated` error row (default: it stays incomplete).", manifest=True,
           commands=("score",)),
    Option("io_timeout", "storage", "Seconds a storage call may go without an answer (S3, GCS and HTTP connect and "
           "read timeouts; a shard's read retries a stalled call, then fails the shard).", "float", low=1,
           metavar="SECONDS", manifest=True),
    Option("exact_decode", "labels", "Decode JPEGs at full size before resizing (slower; default: DCT-domain "
           "downscaling).", labels=True, manifest=True, commands=("score",)),
)  # fmt: skip
BY_NAME = {option.name: option for option in OPTIONS}
BY_FLAG = {option.flag_name: option for option in OPTIONS}


def command_options(command: str) -> list[Option]:
    return [option for option in OPTIONS if command in option.commands]


def label_flags() -> dict[str, str]:
    """The options that shape the labels, and the flag that sets each (for a refusal's one line)."""
    return {option.name: option.flag for option in OPTIONS if option.labels}


def manifest_options(config: ScoreConfig) -> dict[str, Any]:
    """The values of the options the manifest lists."""
    return {
        option.name: option_value(config if option.group == "run" else getattr(config, option.group), option.name)
        for option in OPTIONS
        if option.manifest
    }


def option_value(holder: Any, name: str) -> Any:
    """An option's value in the config group `holder`, as JSON records it (a tuple as a list)."""
    value = getattr(holder, name)
    return list(value) if isinstance(value, tuple) else value


def comma_names(text: str) -> list[str]:
    """The names of an A,B,... flag value, without blanks."""
    return [part.strip() for part in text.split(",") if part.strip()]


def from_flags(values: dict[str, Any]) -> dict[str, Any]:
    """Values by flag name (as click and a nightly config give them: no_stats, meta_fields as a list or A,B) as
    values by option name."""
    options = {}
    for name, value in values.items():
        option = BY_FLAG.get(name)
        if option is None:
            options[name] = value  # score_config names what it does not know
        elif option.negated:
            options[option.name] = not value
        elif option.kind == "list" and isinstance(value, str):
            options[option.name] = comma_names(value)
        else:
            options[option.name] = value
    return options


def config_value(option: Option, value: Any) -> Any:
    """A value of `option` as a config file gives it (YAML's types), checked and converted as its flag is on the
    command line; click.BadParameter says what is wrong."""
    if option.kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, (str, int, float)) for item in items):
            raise click.BadParameter("expected a list of names, or names separated by commas")
        return [str(item) for item in items] if isinstance(value, list) else str(value)
    if isinstance(value, (dict, list)):
        raise click.BadParameter(f"expected one value, got {type(value).__name__}")
    if value is False and "off" in option.choices:  # YAML reads an unquoted off as false
        value = "off"
    return option.click_type().convert(value, None, None)


#: Option name -> its group, for the options score_config takes by name (all but --output and --model).
OPTION_GROUPS = {option.name: option.group for option in OPTIONS if not option.required}


def score_config(
    inputs: str | tuple[str, ...] | list[str],
    output: str,
    model: str,
    storage: StorageOptions = StorageOptions(),
    **options: Any,
) -> ScoreConfig:
    """A ScoreConfig from flat option names (those of OPTION_GROUPS); an unknown name is a usage error. Storage
    options given by name override those of `storage`. One input may be given as a string, and meta_fields as "a,b"."""
    unknown = sorted(set(options) - set(OPTION_GROUPS))
    if unknown:
        raise UsageError(f"unknown options {', '.join(unknown)}; known: {', '.join(sorted(OPTION_GROUPS))}")
    grouped: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for name, value in options.items():
        grouped[OPTION_GROUPS[name]][name] = value
    if "meta_fields" in grouped["labels"]:
        fields = grouped["labels"]["meta_fields"]
        fields = comma_names(fields) if isinstance(fields, str) else fields  # "a,b" as on the command line
        grouped["labels"]["meta_fields"] = tuple(dict.fromkeys(fields))  # each once
    parts = {group: GROUPS[group](**grouped[group]) for group in ("labels", "engine", "presentation")}
    storage = replace(storage, **grouped["storage"])
    inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)  # tuple("data/") would be its letters
    return ScoreConfig(inputs=inputs, output=output, model=model, storage=storage, **parts, **grouped["run"])


def rescore_config(
    source: str, output: str, model: str, storage: StorageOptions = StorageOptions(), **options: Any
) -> ScoreConfig:
    """A rescore: the heads-only `model` over the stored embeddings of the output `source`, into `output`. The
    label options the source recorded (metadata fields, decode) are taken from it when the run starts."""
    return replace(score_config([source], output, model, storage, **options), reads=EMBEDDINGS)
