"""A scoring run's configuration: what to score where, with which model, grouped by concern.

The CLI flags and the nightly YAML name options flat (`batch_size`, `meta_fields`, `progress`);
`score_config` sorts such names into their groups, so each name is defined once, in its group.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import UsageError
from ..job.config import EngineOptions, LabelOptions, StorageOptions
from ..job.inputs import EMBEDDINGS, IMAGES


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


_GROUPS = {"labels": LabelOptions, "engine": EngineOptions, "presentation": Presentation}
_RUN_OPTIONS = ("overwrite", "repair", "max_error_rate", "allow_inaccurate_model", "strict_meta")
#: Flat option name -> the group that defines it (None: ScoreConfig itself).
OPTION_GROUPS: dict[str, str | None] = {
    **{f.name: group for group, kind in _GROUPS.items() for f in fields(kind)},
    **dict.fromkeys(_RUN_OPTIONS),
}


def score_config(
    inputs: tuple[str, ...] | list[str],
    output: str,
    model: str,
    storage: StorageOptions = StorageOptions(),
    **options: Any,
) -> ScoreConfig:
    """A ScoreConfig from flat option names (those of OPTION_GROUPS); an unknown name is a usage error."""
    unknown = sorted(set(options) - set(OPTION_GROUPS))
    if unknown:
        raise UsageError(f"unknown options {', '.join(unknown)}; known: {', '.join(sorted(OPTION_GROUPS))}")
    grouped: dict[str, dict[str, Any]] = {group: {} for group in _GROUPS}
    top: dict[str, Any] = {}
    for name, value in options.items():
        group = OPTION_GROUPS[name]
        (grouped[group] if group else top)[name] = value
    if "meta_fields" in grouped["labels"]:
        grouped["labels"]["meta_fields"] = tuple(grouped["labels"]["meta_fields"])
    parts = {group: kind(**grouped[group]) for group, kind in _GROUPS.items()}
    return ScoreConfig(inputs=tuple(inputs), output=output, model=model, storage=storage, **parts, **top)


def rescore_config(
    source: str, output: str, model: str, storage: StorageOptions = StorageOptions(), **options: Any
) -> ScoreConfig:
    """A rescore: the heads-only `model` over the stored embeddings of the output `source`, into `output`. The
    label options the source recorded (metadata fields, decode) are taken from it when the run starts."""
    return replace(score_config([source], output, model, storage, **options), reads=EMBEDDINGS)
