"""The taxonomy under a public name users import (`emonet_batch.taxonomy`); it lives in the model record."""

from .model.taxonomy import (  # noqa: F401
    ALIASES,
    DIMENSION_COLUMNS,
    DIMENSIONS,
    EMOTION_COLUMNS,
    EMOTIONS,
    FAMILIES,
    HEAD_COLUMNS,
    canonical_label,
    column_name,
    family_of,
    head_file_name,
    head_file_stem,
    is_emotion,
    label_of,
)
