"""What ``--resume`` needs: the training state written after every epoch, and the RNG states.

``train_state.pt`` holds the network and optimiser (and AMP scaler) states, the next epoch, the
best validation loss so far and the random-number generators' states, as plain types and tensors
so that it loads with ``weights_only=True``. It is written atomically, after the epoch's model
checkpoints, so a run killed at any point resumes from the last complete epoch.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from gemsearch.errors import ModelError

from ..models.checkpoint import atomic_torch_save
from ..models.weights import safe_load

STATE_FILE = "train_state.pt"
FORMAT = "gemsearch.train-state"


class Progress(BaseModel):
    """Bookkeeping that survives a resume."""

    model_config = ConfigDict(extra="forbid")

    next_epoch: int = 0
    best_loss: float = float("inf")
    best_epoch: int = -1


def seed_everything(seed: int, epoch: int, rank: int) -> None:
    """Seed torch, numpy and random from (seed, epoch >= -1, rank): an epoch draws the same numbers whether
    or not the run was interrupted before it."""
    value = int(np.random.SeedSequence([seed, epoch + 1, rank]).generate_state(1)[0])
    torch.manual_seed(value)
    np.random.seed(value)
    random.seed(value)


def rng_states() -> dict[str, Any]:
    np_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            *(int(v) if isinstance(v, int) else float(v) for v in np_state[2:]),
        ],
        "python": _tensorise(random.getstate()),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_untensorise(states["python"]))


def save_state(
    directory: Path,
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    config_json: str,
) -> Path:
    payload = {
        "format": FORMAT,
        "progress": progress.model_dump(),
        "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states(),
        "config": config_json,
    }
    return atomic_torch_save(payload, directory / STATE_FILE)


def load_state(directory: Path) -> dict[str, Any]:
    """The saved state of the run in ``directory``; ``ModelError`` if there is none or it is not one."""
    path = directory / STATE_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: nothing to resume (no {STATE_FILE})")
    payload = safe_load(path, "training state")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a gemsearch training state")
    return payload


def restore(
    payload: dict[str, Any],
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    net.load_state_dict(payload["net"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    set_rng_states(payload["rng"])
    return Progress.model_validate(payload["progress"])


def _tensorise(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _untensorise(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(int(v) for v in internal.tolist()), gauss)
