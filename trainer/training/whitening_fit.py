"""Learn a model's post-hoc whitening from a training set and keep it with the model.

Lw (``learn_whitening``) is learned, as in cirtorch, from the descriptors of every image of the
set and its matching pairs; PCA whitening (``learn_pca_whitening``) from the descriptors alone.
Descriptors are extracted the way they will be used (single- or multi-scale, at ``max_side``),
and the result is stored under ``"ss"`` or ``"ms"`` accordingly, so ``TorchEmbedder``, ``gemsearch
evaluate`` and the exporter pick the whitening that matches the extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from gemsearch.errors import ConfigError

from ..models.embedder import TorchEmbedder
from ..models.extraction import SINGLE_SCALE
from ..models.model import RetrievalModel
from ..models.whitening import Whitening, learn_pca_whitening, learn_whitening
from .data import TrainingSet

log = logging.getLogger(__name__)
WhiteningMethod = Literal["learned", "pca"]


def whitening_key(scales: Sequence[float]) -> Literal["ss", "ms"]:
    """The key a whitening learned on this kind of extraction is stored under."""
    return "ms" if len(scales) > 1 else "ss"


def fit_whitening(
    model: RetrievalModel,
    data: TrainingSet,
    *,
    method: WhiteningMethod = "learned",
    scales: Sequence[float] = SINGLE_SCALE,
    dims: int | None = None,
    max_side: int | None = None,
    device: str = "cpu",
    batch_size: int = 8,
    progress: bool = False,
) -> Whitening:
    """Whitening of ``model``'s raw descriptors (its own post-hoc whitening is not applied).

    ``dims`` keeps the first ``dims`` output dimensions (largest eigenvalues first).
    """
    embedder = TorchEmbedder(
        model, scales=scales, max_side=max_side, device=device, batch_size=batch_size,
        whiten=False, progress=progress,
    )  # fmt: skip
    log.info("describing %d images of %s", len(data.images), data.name)
    vecs = embedder.embed(list(data.images))
    try:
        if method == "learned":
            whitening = learn_whitening(vecs, data.qidxs, data.pidxs, learned_from=data.name)
        else:
            whitening = learn_pca_whitening(vecs, learned_from=data.name, eps=_null_space_eps(vecs, dims))
        return whitening.reduced(dims) if dims is not None else whitening
    except ValueError as exc:
        raise ConfigError(f"{data.name}: cannot learn {method} whitening ({exc})") from exc


def _null_space_eps(vecs: npt.NDArray[np.float32], dims: int | None) -> float:
    """Fewer images than dimensions leave zero-variance directions; when ``dims`` drops them anyway, a
    negligible eps (1e-9 of the total variance) lets PCA whitening scale the kept ones. ``n`` centred
    images span up to ``n - 1`` directions, so ``dims = n - 1`` still drops only null ones."""
    if dims is None or dims > len(vecs) - 1:
        return 0.0
    return 1e-9 * float(np.var(vecs.astype(np.float64), axis=0).sum())


def with_whitening(model: RetrievalModel, whitening: Whitening, scales: Sequence[float]) -> RetrievalModel:
    """``model`` with ``whitening`` stored for this kind of extraction (replacing any there)."""
    model.whitening = {**model.whitening, whitening_key(scales): whitening}
    return model
