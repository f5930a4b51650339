"""``TorchEmbedder``: the PyTorch side of the ``Embedder`` protocol (the ONNX embedder is the other).

Images (paths or PIL images) go through the model's own preprocessing (``gemsearch.preprocess``),
then ``extract_descriptors``, then the model's post-hoc whitening for that kind of extraction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from tqdm import tqdm

from gemsearch.errors import ConfigError
from gemsearch.preprocess import Box, Preprocessing, load_rgb, prepare

from .extraction import SINGLE_SCALE, extract_descriptors, resolve_device
from .model import RetrievalModel

log = logging.getLogger(__name__)
ImageLike = str | Path | Image.Image
_CHUNK = 64  # images decoded at a time


class TorchEmbedder:
    """``embed(images) -> (n, D)`` float32, rows L2-normalised, in input order."""

    def __init__(
        self,
        model: RetrievalModel,
        *,
        scales: Sequence[float] = SINGLE_SCALE,
        msp: float | None = None,
        max_side: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        whiten: bool = True,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.scales = tuple(scales)
        self.msp = msp
        self.preprocessing: Preprocessing = model.config.preprocessing
        if max_side is not None:
            self.preprocessing = self.preprocessing.model_copy(update={"max_side": max_side})
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.whitening = model.whitening_for(self.scales) if whiten else None
        if whiten and model.whitening and self.whitening is None:
            log.warning(
                "%s: whitening learned for %s only, not for these scales: descriptors stay unwhitened",
                model.origin, "/".join(model.whitening),
            )  # fmt: skip
        self.progress = progress

    @property
    def output_dim(self) -> int:
        return self.whitening.output_dim if self.whitening is not None else self.model.net.output_dim

    def embed(
        self, images: Sequence[ImageLike], boxes: Sequence[Box | None] | None = None
    ) -> npt.NDArray[np.float32]:
        """Descriptors of ``images``; ``boxes[i]`` (``x1, y1, x2, y2``) crops image ``i`` as a query.

        Images are decoded a chunk at a time, so long lists do not sit in memory as tensors.
        """
        if boxes is not None and len(boxes) != len(images):
            raise ConfigError(f"{len(boxes)} boxes for {len(images)} images")
        out = np.empty((len(images), self.output_dim), dtype=np.float32)
        with tqdm(total=len(images), disable=None if self.progress else True, unit="img") as bar:
            for start in range(0, len(images), _CHUNK):
                stop = min(start + _CHUNK, len(images))
                out[start:stop] = self._embed_chunk(images[start:stop], boxes[start:stop] if boxes else None)
                bar.update(stop - start)
        return out

    def _embed_chunk(
        self, images: Sequence[ImageLike], boxes: Sequence[Box | None] | None
    ) -> npt.NDArray[np.float32]:
        arrays = [
            prepare(_as_rgb(im), self.preprocessing, boxes[i] if boxes else None)
            for i, im in enumerate(images)
        ]
        vecs = extract_descriptors(
            self.model.net,
            arrays,
            scales=self.scales,
            msp=self.msp,
            device=self.device,
            batch_size=self.batch_size,
        )
        return self.whitening.apply(vecs) if self.whitening is not None else vecs


def _as_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    return load_rgb(image)
