"""Resolve a checkpoint argument to a local directory: an existing path, or a Hugging Face hub id
downloaded through huggingface_hub (which also keeps its own cache, so a second export is offline)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DownloadError, UsageError

#: What each kind of checkpoint needs from its repository (the encoder repo also holds tokenizer files).
_PATTERNS = {
    "encoder": ["config.json", "preprocessor_config.json", "*.safetensors"],
    "heads": ["*.pth"],
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(spec: str, kind: str) -> tuple[Path, str]:
    """(local directory, source description) for a path or hub id; kind is 'encoder' or 'heads'."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{kind} checkpoint must be a directory: {spec}")
        return path, str(path.resolve())
    if not _HUB_ID.match(spec):
        raise UsageError(f"{kind} checkpoint not found: {spec} is neither a directory nor a hub id (owner/name)")
    return download(spec, kind), f"hf://{spec}"


def download(repo_id: str, kind: str) -> Path:
    """Download the files a checkpoint needs; any hub or network failure becomes one DownloadError."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_PATTERNS[kind]))
    except LocalEntryNotFoundError:
        raise DownloadError(
            f"cannot download {repo_id} from the Hugging Face hub and it is not in the local cache "
            "(offline?); pass a local checkpoint directory instead"
        ) from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"cannot download {repo_id}: {_status(exc)}") from None
    except OSError as exc:
        raise DownloadError(f"cannot download {repo_id}: {type(exc).__name__}") from None


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return f"HTTP {code}" if code else type(exc).__name__
