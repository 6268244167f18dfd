"""The EmoNet-Face taxonomy: 40 emotions in official order, 7 families, 4 extra affect dimensions.

Heads are identified everywhere in code by their column name (`column_name(label)`); released head
files are named from the label by `head_file_stem(label)`. The data ships inside the package
(`data/guide.json`, copied from the EmoNet-Face release) so nothing outside the package is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import resources


def _load_guide() -> dict:
    text = resources.files(__package__).joinpath("data/guide.json").read_text(encoding="utf-8")
    return json.loads(text)["options"]


_GUIDE = _load_guide()

#: The 40 taxonomy emotions, in the release's official order.
EMOTIONS: tuple[str, ...] = tuple(_GUIDE["labels"])

#: The 7 emotion families (family -> member labels), in the guide's order.
FAMILIES: Mapping[str, tuple[str, ...]] = {family: tuple(members) for family, members in _GUIDE["buttons"].items()}

#: The 4 extra affect heads released beside the 40 emotion heads. They take no part in the softmax.
DIMENSIONS: tuple[str, ...] = ("Valence", "Arousal", "Dominance", "Emotional Vulnerability")

#: Labels used by some annotation files for a taxonomy label (the Binary set says Hopelessness).
ALIASES: Mapping[str, str] = {"Hopelessness": "Helplessness"}


def column_name(label: str) -> str:
    """Column name of a label: lowercase, runs of non-alphanumerics -> `_`, trimmed.

    `Jealousy & Envy` -> `jealousy_envy`, `Pleasure/Ecstasy` -> `pleasure_ecstasy`.
    """
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def head_file_stem(label: str) -> str:
    """Stem of the released head file name, `model_<stem>_best.pth`: the release's own rule
    (lowercase, `/` and space -> `_`), so `Jealousy & Envy` -> `jealousy_&_envy`."""
    return label.lower().replace("/", "_").replace(" ", "_")


def head_file_name(label: str) -> str:
    return f"model_{head_file_stem(label)}_best.pth"


#: Column names of the 40 emotions and of the 4 dimensions, in order.
EMOTION_COLUMNS: tuple[str, ...] = tuple(column_name(label) for label in EMOTIONS)
DIMENSION_COLUMNS: tuple[str, ...] = tuple(column_name(label) for label in DIMENSIONS)
#: All 44 released heads, by column name: the 40 emotions then the 4 dimensions.
HEAD_COLUMNS: tuple[str, ...] = EMOTION_COLUMNS + DIMENSION_COLUMNS

_LABEL_BY_COLUMN = {column_name(label): label for label in EMOTIONS + DIMENSIONS}
_FAMILY_BY_LABEL = {label: family for family, members in FAMILIES.items() for label in members}


def label_of(column: str) -> str:
    """Taxonomy label of a head column name (`jealousy_envy` -> `Jealousy & Envy`)."""
    try:
        return _LABEL_BY_COLUMN[column]
    except KeyError:
        raise KeyError(f"unknown head {column!r}; known heads: {', '.join(HEAD_COLUMNS)}") from None


def family_of(label: str) -> str:
    """Family of a taxonomy emotion label."""
    return _FAMILY_BY_LABEL[canonical_label(label)]


def canonical_label(label: str) -> str:
    """Taxonomy label for a label as written in annotation files (resolves aliases, ignores case
    and punctuation): `Hopelessness` -> `Helplessness`, `jealousy_envy` -> `Jealousy & Envy`."""
    column = column_name(label)
    return label_of(_ALIAS_COLUMNS.get(column, column))


_ALIAS_COLUMNS = {column_name(alias): column_name(label) for alias, label in ALIASES.items()}
_EMOTION_SET = frozenset(EMOTION_COLUMNS)


def is_emotion(column: str) -> bool:
    """True for the 40 taxonomy emotions' columns, False for the extra dimensions."""
    return column in _EMOTION_SET
