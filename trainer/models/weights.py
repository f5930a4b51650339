"""Weight files: local files, or a download into torch's hub cache that fails fast instead of hanging.

Machines without access to the weight hosts get a ``WeightsUnavailableError`` that says where to put
the file, after at most ``timeout_s`` of waiting per network operation (none at all with
``GEMSEARCH_OFFLINE=1``). A file already in the cache is used without touching the network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from gemsearch.errors import ModelError, WeightsUnavailableError

log = logging.getLogger(__name__)

OFFLINE_ENV = "GEMSEARCH_OFFLINE"
DEFAULT_TIMEOUT_S = 10.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch hub's "name-<sha256 prefix>.pth" convention

StateDict = Mapping[str, torch.Tensor]


def cache_dir() -> Path:
    """Where downloaded weights live: torch hub's ``checkpoints`` folder (``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_path(url: str) -> Path:
    return cache_dir() / os.path.basename(urlparse(url).path)


def fetch(url: str, *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S, check_hash: bool = False) -> Path:
    """The local path of the file at ``url``: the cached copy, else a fresh download (fast failure)."""
    path = cached_path(url)
    if path.is_file():
        return path
    hint = f"copy the file to {path}, or use a local weights file instead (weights=PATH)"
    if os.environ.get(OFFLINE_ENV):
        raise WeightsUnavailableError(f"{what}: not cached at {path} and {OFFLINE_ENV} is set; {hint}")
    log.info("downloading %s from %s", what, url)
    try:
        _download(url, path, timeout_s, _expected_prefix(path) if check_hash else None)
    except (OSError, urllib.error.URLError, ValueError) as exc:  # timeouts are OSErrors
        raise WeightsUnavailableError(
            f"{what}: not cached at {path} and the download from {url} failed ({exc}); {hint}"
        ) from exc
    return path


def _expected_prefix(path: Path) -> str | None:
    match = _HASH_IN_NAME.search(path.name)
    return match.group(1) if match else None


def _download(url: str, dest: Path, timeout_s: float, sha256_prefix: str | None) -> None:
    """Stream ``url`` into a temporary file next to ``dest``, check the hash, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".part-", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
            if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
                raise ValueError(f"sha256 of the download does not start with {sha256_prefix}")
        except BaseException:
            os.unlink(tmp.name)
            raise
    shutil.move(tmp.name, dest)


def safe_load(path: str | Path, what: str = "weights file", allow: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; only the ``allow``-listed extra globals."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: no such {what}") from exc
    except Exception as exc:  # malformed files surface as struct.error, UnpicklingError, RuntimeError, ...
        raise ModelError(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})") from exc


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict (name -> tensor) from a weights file, read with ``weights_only=True``."""
    state = safe_load(path)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]  # a training checkpoint: take its weights
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: expected a state dict of tensors")
    return dict(state)
