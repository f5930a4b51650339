"""Descriptor extraction, single- and multi-scale, as cirtorch's ``extract_ss`` / ``extract_ms``.

Multi-scale: the (already resized) image tensor is rescaled by each factor with bilinear
interpolation (``align_corners=False``, no antialiasing, ``scale_factor`` as cirtorch passes it), the
network's L2-normalised descriptors are combined as ``(mean_s v_s^msp)^(1/msp)`` and L2-normalised.
Images are batched only with images of the same size: padding would change the pooled values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from gemsearch.errors import ConfigError
from gemsearch.preprocess import MULTISCALE as MULTISCALE  # re-exported: the trainer API names it here

from .network import RetrievalNet

SINGLE_SCALE: tuple[float, ...] = (1.0,)

ImageInput = npt.NDArray[np.float32] | Tensor
"""One preprocessed image, ``(3, h, w)`` float32 (``gemsearch.preprocess.prepare``)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; ``ConfigError`` if it is malformed or its kind is missing."""
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"not a torch device: {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return resolved


def rescale(x: Tensor, scale: float) -> Tensor:
    """``(n, 3, h, w)`` -> ``(n, 3, floor(h s), floor(w s))``, bilinear, as cirtorch rescales."""
    if scale == 1:
        return x
    if min(math.floor(x.shape[-2] * scale), math.floor(x.shape[-1] * scale)) < 1:
        raise ConfigError(f"an image of {x.shape[-1]}x{x.shape[-2]} is too small for scale {scale}")
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False, antialias=False)


def power_mean(descriptors: Sequence[Tensor], p: float) -> Tensor:
    """``(mean_s v_s^p)^(1/p)``, L2-normalised, of ``(n, D)`` descriptors ``v_s``."""
    v = torch.stack([d.pow(p) for d in descriptors]).mean(dim=0).pow(1.0 / p)
    norm: Tensor = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    return v / norm.clamp_min(1e-12)


def describe_batch(
    net: RetrievalNet, x: Tensor, scales: Sequence[float] = SINGLE_SCALE, msp: float | None = None
) -> Tensor:
    """``(n, 3, h, w)`` -> ``(n, D)``; ``msp`` defaults to ``net.multiscale_power``."""
    if tuple(scales) == SINGLE_SCALE:
        single: Tensor = net(x)
        return single
    p = net.multiscale_power if msp is None else msp
    return power_mean([net(rescale(x, s)) for s in scales], p)


def same_size_batches(sizes: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices grouped by equal size (groups in order of first appearance), at most ``batch_size`` each."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return [idx[i : i + batch_size] for idx in groups.values() for i in range(0, len(idx), batch_size)]


def extract_descriptors(
    net: RetrievalNet,
    images: Sequence[ImageInput],
    *,
    scales: Sequence[float] = SINGLE_SCALE,
    msp: float | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
    progress: bool = False,
) -> npt.NDArray[np.float32]:
    """Descriptors ``(n, D)`` float32 of ``(3, h, w)`` images, in input order.

    The network is moved to ``device`` and run in eval mode (its mode is restored afterwards).
    """
    if batch_size < 1 or not scales or min(scales) <= 0:
        raise ConfigError("batch_size must be >= 1 and scales a non-empty list of positive numbers")
    out = np.zeros((len(images), net.output_dim), dtype=np.float32)
    was_training = net.training
    device = resolve_device(device)
    net.to(device).eval()
    try:
        with torch.inference_mode(), tqdm(total=len(images), disable=not progress, unit="img") as bar:
            for batch in same_size_batches([tuple(im.shape) for im in images], batch_size):
                x = torch.stack([torch.as_tensor(images[i]) for i in batch]).to(device, torch.float32)
                out[batch] = describe_batch(net, x, scales, msp).float().cpu().numpy()
                bar.update(len(batch))
    finally:
        net.train(was_training)
    return out
