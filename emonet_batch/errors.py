"""Errors the CLI reports as one line. Anything else is a bug and keeps its traceback."""


class EmonetError(Exception):
    """An expected failure with a message fit for the operator; `exit_code` is what the CLI returns."""

    exit_code = 1


class UsageError(EmonetError):
    """The command was called wrongly (bad option value, missing input)."""

    exit_code = 2


class ModelError(EmonetError):
    """A model directory or checkpoint is missing, corrupt, or does not match its record."""


class ExportError(EmonetError):
    """The export could not produce a verified model."""


class DownloadError(EmonetError):
    """A hub download failed (no network, unknown repository, missing files)."""


class PipelineError(EmonetError):
    """The Ray pipeline itself failed (a stage raised, an actor could not start)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, capped, for one-line errors (its type name if empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
