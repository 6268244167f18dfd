"""The score post-processing under a public name users import (`emonet_batch.postprocess`); it lives in the model
record."""

from .model.postprocess import derive, emotion_indices, packaged_neutral_means, top_emotion, top_k  # noqa: F401
