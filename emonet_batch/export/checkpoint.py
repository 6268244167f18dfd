"""Load the released checkpoints (export side only; needs torch and transformers).

- Heads: one `model_<stem>_best.pth` per head, a plain state dict of an `nn.Sequential` stored as
  `layers.<i>.weight/bias` (sometimes wrapped as {"state_dict": ...}). Small and Large differ only in
  their hidden widths, detected from the tensor shapes.
- Encoder: the SigLIP(2) FixRes vision tower from a transformers checkpoint saved either as a full
  `SiglipModel` or as a `SiglipVisionModel`; its pooled (MAP head) output is the embedding.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, UsageError, first_line
from ..job.decode import resize_filter_name
from ..model.taxonomy import DIMENSIONS, EMOTIONS, column_name, head_file_name

#: Hidden widths of the released head sizes; every head ends in Linear(last, 1).
HEAD_SIZES: dict[str, tuple[int, ...]] = {"small": (128, 32), "large": (1024, 512, 256)}
_ALL_LABELS = EMOTIONS + DIMENSIONS


class EmotionHead(nn.Module):
    """One released regression head: (Linear ReLU Dropout)* Linear(., 1), no output activation.
    The attribute is called `layers` because the released state dicts say `layers.<i>.weight`."""

    def __init__(self, in_dim: int, hidden: Sequence[int], dropout: float = 0.1):
        super().__init__()
        modules: list[nn.Module] = []
        width = in_dim
        for out in hidden:
            modules += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(dropout)]
            width = out
        modules.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.layers if isinstance(m, nn.Linear)]


@dataclass
class HeadSet:
    """Loaded heads in output order: `columns[i]` is computed by `modules[i]`, read from `files[i]`."""

    head_size: str
    in_dim: int
    columns: list[str]
    modules: list[EmotionHead]
    files: list[Path]


def find_head_files(directory: Path, wanted: Iterable[str] | None = None) -> dict[str, Path]:
    """Head column name -> file, matching released names case-insensitively, in taxonomy order.

    wanted: column names that must all be present; None takes every head found (at least one)."""
    if not directory.is_dir():
        raise ModelError(f"head directory not found: {directory}")
    by_lower = {p.name.lower(): p for p in directory.iterdir() if p.is_file()}
    found = {
        column_name(label): by_lower[head_file_name(label)]
        for label in _ALL_LABELS
        if head_file_name(label) in by_lower
    }
    if wanted is None:
        if not found:
            raise ModelError(f"no head files (model_<emotion>_best.pth) in {directory}")
        return found
    wanted = list(wanted)
    if not wanted:
        raise UsageError("--only-heads names no head")
    known = {column_name(label): label for label in _ALL_LABELS}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise UsageError(f"unknown heads: {', '.join(unknown)}; {head_names_hint(unknown, list(known))}")
    missing = [head_file_name(known[w]) for w in wanted if w not in found]
    if missing:
        raise ModelError(f"missing head files in {directory}: {', '.join(missing)}")
    return {w: found[w] for w in wanted}


def head_names_hint(unknown: list[str], known: list[str]) -> str:
    """What the heads are called, and the one a name spelt with other capitals or separators means."""
    by_spelling = {_spelling(name): name for name in known}
    meant = [f"{by_spelling[_spelling(name)]} for {name}" for name in unknown if _spelling(name) in by_spelling]
    names = f"heads are named as their label columns ({', '.join(known[:3])}, ... {len(known)} in all)"
    return f"did you mean {', '.join(meant)}? {names}" if meant else names


def _spelling(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


def read_head_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a head file; weights_only so a checkpoint cannot run code on load."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # corrupt, or objects other than tensors: torch's text advises unsafe loading
        raise ModelError(
            f"{path}: not a readable head checkpoint: corrupt, or it pickles objects other than tensors, "
            "which are refused since unpickling them could run code"
        ) from None
    except Exception as exc:  # torch raises many types for corrupt files; all mean the same here
        raise ModelError(f"{path}: not a readable head checkpoint ({type(exc).__name__}: {first_line(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state dict of tensors")
    # checkpoints saved from DataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items()}


def detect_head_size(state: dict[str, torch.Tensor], path: Path) -> tuple[str, int]:
    """(head size name, input width) from the shapes of a head's linear layers."""
    weights = [state[k] for k in sorted((k for k in state if k.endswith(".weight")), key=_layer_index)]
    widths = tuple(int(w.shape[0]) for w in weights)
    for name, hidden in HEAD_SIZES.items():
        if widths == hidden + (1,):
            return name, int(weights[0].shape[1])
    shapes = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in state.items())
    raise ModelError(f"{path}: layer shapes match neither the Small nor the Large head ({shapes})")


def _layer_index(key: str) -> int:
    try:
        return int(key.split(".")[1])
    except (IndexError, ValueError):
        return -1


def load_head(path: Path) -> tuple[str, EmotionHead]:
    state = read_head_state(path)
    size, in_dim = detect_head_size(state, path)
    head = EmotionHead(in_dim, HEAD_SIZES[size])
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: does not fit the {size} head layout: {first_line(exc)}") from None
    return size, head.eval()


def load_heads(directory: str | os.PathLike, wanted: Iterable[str] | None = None) -> HeadSet:
    """Load released head files; all must share one size and one input width."""
    files = find_head_files(Path(directory), wanted)
    sizes, modules, in_dims = {}, [], set()
    for path in files.values():
        size, head = load_head(path)
        sizes[path.name] = size
        in_dims.add(head.linears[0].in_features)
        modules.append(head)
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name}={size}" for name, size in sizes.items())
        raise ModelError(f"heads mix Small and Large layouts: {listing}")
    if len(in_dims) > 1:
        raise ModelError(f"heads disagree on their input width: {sorted(in_dims)}")
    return HeadSet(next(iter(sizes.values())), in_dims.pop(), list(files), modules, list(files.values()))


@dataclass
class Encoder:
    model: nn.Module | None  # transformers SiglipVisionModel; None when loaded without its weights
    image_size: int
    width: int
    resize_filter: str
    files: list[Path]


def load_encoder(directory: str | os.PathLike, weights: bool = True) -> Encoder:
    """The SigLIP vision tower of a transformers checkpoint directory (full model or vision only); without
    `weights`, its shape and files only: a heads-only export needs no more, and so400m's weights are 1.6 GB of
    memory (its files are hashed either way, which is most of the ~5 s its load takes)."""
    from transformers import SiglipConfig, SiglipVisionConfig, SiglipVisionModel

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelError(f"encoder checkpoint has no config.json: {directory}")
    model_type = config_object(config_path).get("model_type")
    if model_type == "siglip":
        vision_config = SiglipConfig.from_pretrained(directory).vision_config
    elif model_type == "siglip_vision_model":
        vision_config = SiglipVisionConfig.from_pretrained(directory)
    else:
        raise ModelError(
            f"{config_path}: model_type {model_type!r} is not a SigLIP FixRes tower "
            "(expected 'siglip' or 'siglip_vision_model'; NaFlex 'siglip2' checkpoints are not supported)"
        )
    # transformers releases before the attribute always built the head; the default says the same
    if not getattr(vision_config, "vision_use_head", True):
        raise ModelError(f"{config_path}: the tower has no attention-pool head, so it has no pooled embedding")
    if not any(directory.glob("*.safetensors")):
        raise ModelError(
            f"{directory}: no .safetensors weights; pickled weights (pytorch_model.bin) are never loaded, since "
            "unpickling can run code: use the checkpoint's safetensors release"
        )
    model = None
    if weights:
        try:
            with quiet_transformers():
                model = SiglipVisionModel.from_pretrained(directory, config=vision_config, use_safetensors=True).eval()
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"{directory}: cannot load the encoder weights: {first_line(exc)}") from None
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in {".json", ".safetensors"})
    return Encoder(model, vision_config.image_size, vision_config.hidden_size, read_resize_filter(directory), files)


def read_resize_filter(directory: Path) -> str:
    """The resize filter of the checkpoint's preprocessor_config.json; bilinear when absent."""
    path = directory / "preprocessor_config.json"
    if not path.is_file():
        return "bilinear"
    resample = config_object(path).get("resample")
    return "bilinear" if resample is None else resize_filter_name(resample)


def config_object(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file (config, preprocessor config), which must hold an object."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{path}: not JSON ({first_line(exc)})") from None
    if not isinstance(loaded, dict):
        raise ModelError(f"{path}: not a JSON object")
    return loaded


@contextmanager
def quiet_transformers():
    """transformers prints a load report for every unused text-tower weight, and progress bars over the tensors it
    loads or saves; keep the log readable."""
    from transformers.utils import logging as transformers_logging

    logger = logging.getLogger("transformers")
    level, bar = logger.level, transformers_logging.is_progress_bar_enabled()
    logger.setLevel(logging.ERROR)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bar:
            transformers_logging.enable_progress_bar()
