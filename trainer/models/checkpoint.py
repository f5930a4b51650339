"""Our checkpoint format: the weights plus the ``NetworkConfig`` that rebuilds the network.

A ``torch.save`` dict of plain types and tensors only, so it loads with ``weights_only=True``::

    {"format": "gemsearch.retrieval-net", "version": 1, "config": "<NetworkConfig JSON>",
     "state_dict": {...}, "whitening": {"ss": {"kind", "m", "P", "learned_from", "dims"}, ...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from gemsearch.errors import ModelError
from gemsearch.files import atomic_write

from .model import RetrievalModel
from .network import NetworkConfig, build_network
from .weights import safe_load
from .whitening import Whitening

FORMAT = "gemsearch.retrieval-net"
VERSION = 1


def save_checkpoint(model: RetrievalModel, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (atomically: a temporary file renamed into place)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.config.model_dump_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "whitening": {key: _whitening_to_dict(w) for key, w in model.whitening.items()},
    }
    return atomic_torch_save(payload, path)


def atomic_torch_save(payload: Any, path: Path) -> Path:
    """``torch.save`` into a temporary file renamed into place, so a killed process never leaves a
    truncated file; created with the umask's permissions (mkstemp's 0600 would hide it from others)."""
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def is_checkpoint(payload: object) -> bool:
    return isinstance(payload, Mapping) and payload.get("format") == FORMAT


def load_checkpoint(path: str | Path) -> RetrievalModel:
    """Rebuild the network of a checkpoint written by ``save_checkpoint`` (strict weight loading)."""
    return model_from_checkpoint(safe_load(path, "checkpoint"), origin=str(path))


def model_from_checkpoint(payload: Any, origin: str = "") -> RetrievalModel:
    if not is_checkpoint(payload):
        raise ModelError(f"{origin}: not a gemsearch checkpoint (no format {FORMAT!r})")
    if payload.get("version") != VERSION:
        raise ModelError(f"{origin}: checkpoint version {payload.get('version')} is not {VERSION}")
    try:
        config = NetworkConfig.model_validate_json(payload["config"])
        whitening = {k: _whitening_from_dict(v) for k, v in payload.get("whitening", {}).items()}
    except (ValidationError, KeyError, TypeError) as exc:
        raise ModelError(f"{origin}: invalid checkpoint config ({exc})") from exc
    net = build_network(config)
    load_strict(net, payload["state_dict"], origin)
    return RetrievalModel(net, config, whitening, origin)


def load_strict(net: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"{origin}: the weights do not fit the network ({exc})") from exc


def _whitening_to_dict(w: Whitening) -> dict[str, Any]:
    return {"kind": w.kind, "m": torch.from_numpy(w.m), "P": torch.from_numpy(w.P),
            "learned_from": w.learned_from, "dims": w.dims}  # fmt: skip


def _whitening_from_dict(d: Mapping[str, Any]) -> Whitening:
    return Whitening(kind=d["kind"], m=d["m"].double().numpy(), P=d["P"].double().numpy(),
                     learned_from=d.get("learned_from"), dims=d.get("dims"))  # fmt: skip
