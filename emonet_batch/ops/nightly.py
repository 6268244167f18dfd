"""Nightly incremental scoring: each day's new shards into <root>/dt=YYYY-MM-DD/, then stats and report.

A shard counts as done when any earlier (or today's) partition holds its commit record, so a night scores
only what arrived since, and rerunning the same day does no work (not even starting Ray).

Config (YAML):
    inputs: ["s3://corpus/incoming/shard-*.tar"]   # anything `score` takes as INPUT
    output_root: s3://results/emonet/nightly
    model: /models/empathic-large                  # an exported model directory
    options:                                       # optional; score's flags by their long names
      meta_fields: [gender, age, ethnicity]
      batch_size: 32
      gpus_per_worker: 1
      endpoint_url: http://minio:9000              # non-secret; credentials come from the environment
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError, first_line
from ..job.commitlog import read_records
from ..job.config import StorageOptions
from ..job.inputs import Shard, expand_inputs, without
from ..job.preflight import check_inputs, left_out_warning
from ..job.storage import NOT_FOUND, filesystem, join
from ..run.config import BY_FLAG, OPTION_GROUPS, command_options, config_value, from_flags, score_config

_PARTITION = re.compile(r"dt=(\d{4}-\d{2}-\d{2})$")
#: The options a nightly config takes: score's flags by their long names (with `_` or `-`), but the output and the
#: model, which the config names itself.
FLAG_NAMES = {option.flag_name for option in command_options("score") if not option.required}


def score_options(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """A config's `options`, named like score's flags, as score_config's options; an unknown name is a usage
    error that lists the known ones."""
    options = {str(name).replace("-", "_"): value for name, value in raw.items()}
    unknown = sorted(set(options) - FLAG_NAMES)
    if unknown:
        raise UsageError(f"{source}: unknown options {', '.join(unknown)}; known: {', '.join(sorted(FLAG_NAMES))}")
    checked = {}
    for name, value in options.items():
        try:
            checked[name] = config_value(BY_FLAG[name], value)
        except click.BadParameter as exc:
            raise UsageError(f"{source}: option {name}: {exc.message}") from None
    return from_flags(checked)


@dataclass(frozen=True)
class NightlyConfig:
    inputs: tuple[str, ...]
    output_root: str
    model: str
    options: dict[str, Any]
    storage: StorageOptions

    @classmethod
    def from_yaml(cls, path: str | Path) -> NightlyConfig:
        raw = read_config(path)
        options = score_options(dict(raw.get("options") or {}), str(path))
        # the storage options reach storage here, before the run: the partitions are listed with them
        storage = StorageOptions(
            **{name: options.pop(name) for name in list(options) if OPTION_GROUPS[name] == "storage"}
        )
        return cls(tuple(raw["inputs"]), raw["output_root"], raw["model"], options, storage)


#: The keys of a nightly config.
CONFIG_KEYS = ("inputs", "output_root", "model", "options")


def read_config(path: str | Path) -> dict[str, Any]:
    """The config file's mapping, its entries of the right kinds (inputs as a list); a usage error in one line
    otherwise."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except NOT_FOUND:
        raise UsageError(f"nightly config not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"nightly config is a directory, not a file: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: not a mapping of inputs, output_root, model and options")
    unknown = sorted(str(key) for key in set(raw) - set(CONFIG_KEYS))
    if unknown:  # most likely a flag written beside `options:` instead of under it, which would be ignored
        raise UsageError(
            f"{path}: unknown keys {', '.join(unknown)}; a config has {', '.join(CONFIG_KEYS)} (score's flags go "
            "under options)"
        )
    missing = [k for k in CONFIG_KEYS[:3] if not raw.get(k)]
    if missing:
        raise UsageError(f"{path}: missing {', '.join(missing)}")
    inputs = raw["inputs"] if isinstance(raw["inputs"], list) else [raw["inputs"]]
    if not all(isinstance(text, str) for text in [*inputs, raw["output_root"], raw["model"]]):
        raise UsageError(f"{path}: inputs (one or a list), output_root and model must be paths or URLs")
    if not isinstance(raw.get("options") or {}, dict):
        raise UsageError(f"{path}: options must be a mapping of option names to values")
    return {**raw, "inputs": inputs}


def yaml_problem(exc: Exception) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    return f"{getattr(exc, 'problem', None) or first_line(exc)}{where}"


def committed_everywhere(fs, root: str) -> set[str]:
    """Shard ids with a commit record in any dt= partition under root."""
    try:
        partitions = [p for p in fs.ls(root, detail=False) if _PARTITION.search(p.rstrip("/"))]
    except NOT_FOUND:
        return set()
    done = set()
    for partition in partitions:  # through each one's checkpoint and commit log: a few requests a partition
        done |= set(read_records(fs, partition).records)
    return done


def new_shards(shards: list[Shard], done: set[str]) -> list[Shard]:
    """The shards no partition has committed, in input order."""
    return [shard for shard in shards if shard.shard_id not in done]


def run_nightly(config: NightlyConfig, day: dt.date | None = None, progress: str = "auto"):
    """Score the shards no partition has committed into dt=<day>; None when there is nothing to do."""
    from ..run.score import run_score

    day = day or dt.datetime.now(dt.timezone.utc).date()
    fs, root = filesystem(config.output_root, config.storage)
    done = committed_everywhere(fs, root)
    new = new_shards(expand_inputs(config.inputs, config.storage), done)
    # listed files that hold no images (img2dataset's metadata) are never committed: left out here, every night,
    # since the run is given the rest by name
    meta_fields = tuple(config.options.get("meta_fields") or ())
    left_out = check_inputs(new, config.storage, config.options.get("key_column"), meta_fields)
    kept = without(new, left_out)
    if not kept:
        return None
    output = join(config.output_root, f"dt={day.isoformat()}")
    options = {**config.options, "progress": progress}
    result = run_score(score_config([s.url for s in kept], output, config.model, config.storage, **options))
    result.warnings += left_out_warning(left_out)
    return result
