"""Public name of the score post-processing (see DESIGN.md's public interface); it lives in the model record."""

from .model.postprocess import derive, emotion_indices, packaged_neutral_means, top_emotion, top_k  # noqa: F401
