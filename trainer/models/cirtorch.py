"""Import cirtorch checkpoints (e.g. the paper's ``retrievalSfM120k-resnet101-gem-b80fb85.pth``).

A cirtorch checkpoint is a dict with ``meta`` (architecture, pooling, whitening, mean, std,
outputdim, optionally ``Lw``: per dataset, the learned whitening ``{"ss"|"ms": {"m", "P"}}`` as numpy
arrays of ``d x 1`` / ``d x d``) and ``state_dict`` in the same names as ``RetrievalNet``. It is read
with ``weights_only=True``; the only non-torch globals allowed are the few numpy needs to rebuild
arrays and scalars, under both their numpy 1 (``numpy.core``) and numpy 2 (``numpy._core``) names.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gemsearch.errors import ConfigError, ModelError
from gemsearch.preprocess import Preprocessing

from .checkpoint import load_strict
from .model import RetrievalModel
from .network import NetworkConfig, build_network
from .weights import fetch, safe_load
from .whitening import Whitening

log = logging.getLogger(__name__)

_NETWORKS = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/"
CIRTORCH_PRETRAINED = {
    "retrievalSfM120k-vgg16-gem": _NETWORKS + "retrieval-SfM-120k/retrievalSfM120k-vgg16-gem-b4dcdc6.pth",
    "retrievalSfM120k-resnet101-gem": _NETWORKS
    + "retrieval-SfM-120k/retrievalSfM120k-resnet101-gem-b80fb85.pth",
    "rSfM120k-tl-resnet50-gem-w": _NETWORKS + "retrieval-SfM-120k/rSfM120k-tl-resnet50-gem-w-97bf910.pth",
    "rSfM120k-tl-resnet101-gem-w": _NETWORKS + "retrieval-SfM-120k/rSfM120k-tl-resnet101-gem-w-a155e54.pth",
    "rSfM120k-tl-resnet152-gem-w": _NETWORKS + "retrieval-SfM-120k/rSfM120k-tl-resnet152-gem-w-f39cada.pth",
    "gl18-tl-resnet50-gem-w": _NETWORKS + "gl18/gl18-tl-resnet50-gem-w-83fdc30.pth",
    "gl18-tl-resnet101-gem-w": _NETWORKS + "gl18/gl18-tl-resnet101-gem-w-a4d43db.pth",
    "gl18-tl-resnet152-gem-w": _NETWORKS + "gl18/gl18-tl-resnet152-gem-w-21278d5.pth",
}


def _numpy_globals() -> list[Any]:
    core = importlib.import_module("numpy._core.multiarray")  # what numpy's array pickles name
    allowed: list[Any] = [np.ndarray, np.dtype, *(type(np.dtype(c)) for c in "?bhilqBHILQefdg")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(core._reconstruct, f"{module}._reconstruct"), (core.scalar, f"{module}.scalar")]
    return allowed


def read_payload(path: str | Path) -> Any:
    """Whatever ``torch.save`` wrote at ``path``, read safely: tensors, plain types, numpy arrays."""
    return safe_load(path, "checkpoint", allow=_numpy_globals())


def read_cirtorch(path: str | Path) -> dict[str, Any]:
    """The raw dict of a cirtorch checkpoint file."""
    payload = read_payload(path)
    if not is_cirtorch(payload):
        raise ModelError(f"{path}: not a cirtorch checkpoint (expected 'meta' and 'state_dict')")
    return dict(payload)


def is_cirtorch(payload: object) -> bool:
    return (
        isinstance(payload, Mapping) and isinstance(payload.get("meta"), Mapping) and "state_dict" in payload
    )


def model_from_cirtorch(
    payload: Mapping[str, Any], origin: str = "", lw: str | None = None
) -> RetrievalModel:
    """A ``RetrievalModel`` from a cirtorch checkpoint dict; ``lw`` picks the dataset of ``meta['Lw']``
    (default: the only one, else the first by name)."""
    meta = payload["meta"]
    config = _config(meta, origin)
    net = build_network(config)
    load_strict(net, payload["state_dict"], origin)
    return RetrievalModel(net, config, _learned_whitening(meta.get("Lw"), lw, origin), origin)


def load_cirtorch(path_or_name: str | Path, lw: str | None = None) -> RetrievalModel:
    """Import a cirtorch checkpoint file, or one of ``CIRTORCH_PRETRAINED`` by name (downloaded once)."""
    url = CIRTORCH_PRETRAINED.get(str(path_or_name))
    path = fetch(url, what=f"cirtorch network {path_or_name}") if url else Path(path_or_name)
    return model_from_cirtorch(read_cirtorch(path), origin=str(path_or_name), lw=lw)


def _config(meta: Mapping[str, Any], origin: str) -> NetworkConfig:
    if meta.get("local_whitening") or meta.get("regional"):
        raise ModelError(f"{origin}: local whitening and regional pooling networks are not supported")
    try:
        config = NetworkConfig(
            backbone=meta["architecture"],
            pooling=meta["pooling"],
            preprocessing=Preprocessing(mean=tuple(meta["mean"]), std=tuple(meta["std"])),
        )
        if meta.get("whitening"):  # cirtorch's whitening is a d -> d Linear
            config = config.model_copy(update={"whitening_dim": config.feature_dim})
    except (KeyError, ValueError, ConfigError) as exc:
        raise ModelError(f"{origin}: unsupported cirtorch meta ({exc})") from exc
    if int(meta.get("outputdim", config.feature_dim)) != config.feature_dim:
        raise ModelError(
            f"{origin}: outputdim {meta['outputdim']} is not {config.feature_dim} of {config.backbone}"
        )
    return config


def _learned_whitening(lws: Mapping[str, Any] | None, pick: str | None, origin: str) -> dict[str, Whitening]:
    if not lws:
        return {}
    if pick is not None and pick not in lws:
        raise ModelError(f"{origin}: no whitening learned on {pick!r}; there is {', '.join(lws)}")
    name = pick or sorted(lws)[0]
    if len(lws) > 1 and pick is None:
        log.info("%s: using the whitening learned on %s (of %s)", origin, name, ", ".join(sorted(lws)))
    return {
        kind: Whitening(
            kind="learned",
            m=np.asarray(lw["m"], dtype=np.float64).reshape(-1),  # cirtorch's m is a d x 1 column
            P=np.asarray(lw["P"], dtype=np.float64),
            learned_from=name,
        )
        for kind, lw in lws[name].items()
        if kind in ("ss", "ms")
    }
