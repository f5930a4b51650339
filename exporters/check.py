"""Parity of an exported file with PyTorch: ``check_export(path, model)``.

The file is checked with ``onnx.checker``, loaded in onnxruntime (CPU, and CUDA where present) and
fed images of several sizes and aspect ratios, random and real, exactly as a runtime would feed it
(shrunk with the manifest's rule, uint8 or normalised float). The reference is the PyTorch pipeline
(``prepare`` + ``extract_descriptors`` + the learned whitening applied after the network).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel

from gemsearch.errors import ConfigError
from gemsearch.manifest import ModelManifest
from gemsearch.onnx_manifest import manifest_of_session
from gemsearch.preprocess import Preprocessing, load_rgb, prepare, shrink
from gemsearch.trainer.models.extraction import SINGLE_SCALE, extract_descriptors
from gemsearch.trainer.models.model import RetrievalModel

from .export import INPUT_NAME, WhiteningChoice, pick_whitening

# (height, width) of the random images: odd sizes, a portrait/landscape pair, a square
RANDOM_SIZES: tuple[tuple[int, int], ...] = ((64, 64), (97, 131), (131, 97), (203, 150), (150, 203))
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}  # max abs difference of descriptor components
DEFAULT_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.999}
_PHOTOS = ("chelsea", "coffee", "astronaut")  # scikit-image's colour photos, when it is installed


class CaseResult(BaseModel):
    label: str
    height: int
    width: int
    max_abs_diff: float
    cosine: float


class ProviderResult(BaseModel):
    provider: str
    cases: list[CaseResult]

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.cases)

    @property
    def min_cosine(self) -> float:
        return min(c.cosine for c in self.cases)


class CheckReport(BaseModel):
    path: str
    manifest: ModelManifest
    tolerance: float
    min_cosine_required: float
    providers: list[ProviderResult]

    @property
    def max_abs_diff(self) -> float:
        return max(p.max_abs_diff for p in self.providers)

    @property
    def min_cosine(self) -> float:
        return min(p.min_cosine for p in self.providers)

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.tolerance and self.min_cosine >= self.min_cosine_required


def check_export(
    path: str | Path,
    model: RetrievalModel,
    *,
    whitening: WhiteningChoice = "auto",
    tolerance: float | None = None,
    min_cosine: float | None = None,
    images: Sequence[tuple[str, Image.Image]] | None = None,
    providers: Sequence[str] | None = None,
) -> CheckReport:
    """Compare the file at ``path`` with ``model`` (the one it was exported from).

    ``whitening`` must name the choice made at export. ``images``: (label, RGB image) pairs, default
    ``check_images()``. ``providers``: onnxruntime providers, default CPU and CUDA where available.
    Tolerances default by the manifest's precision (``DEFAULT_TOLERANCE``, ``DEFAULT_MIN_COSINE``).
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path), full_check=True)
    cases = list(images) if images is not None else check_images()
    results, manifest = [], None
    missing = set(providers or ()) - set(ort.get_available_providers())
    if missing:
        raise ConfigError(f"onnxruntime here has no {', '.join(sorted(missing))}")
    for provider in providers or default_providers():
        session = ort.InferenceSession(str(path), providers=_provider_chain(provider))
        manifest = manifest_of_session(session, str(path))
        inputs = [(label, shrink(im, manifest.input.max_side)) for label, im in cases]
        expected = reference_descriptors(model, manifest, [im for _, im in inputs], whitening)
        results.append(
            ProviderResult(
                provider=provider,
                cases=[
                    _compare(label, im, session.run(None, {INPUT_NAME: graph_input(im, manifest)})[0][0], ref)
                    for (label, im), ref in zip(inputs, expected, strict=True)
                ],
            )
        )
    assert manifest is not None  # at least one provider ran
    return CheckReport(
        path=str(path),
        manifest=manifest,
        tolerance=DEFAULT_TOLERANCE[manifest.precision] if tolerance is None else tolerance,
        min_cosine_required=DEFAULT_MIN_COSINE[manifest.precision] if min_cosine is None else min_cosine,
        providers=results,
    )


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _provider_chain(provider: str) -> list[Any]:
    if provider == "CPUExecutionProvider":
        return [provider]
    # CUDA's default TF32 convolutions round fp32 to 10 mantissa bits: the check measures the graph
    options = {"use_tf32": "0"} if provider == "CUDAExecutionProvider" else {}
    return [(provider, options), "CPUExecutionProvider"]


def check_images(paths: Sequence[str | Path] = (), seed: int = 0) -> list[tuple[str, Image.Image]]:
    """Random RGB images of ``RANDOM_SIZES``, scikit-image photos (whole, and a portrait crop and an odd
    shrink of each) when it is installed, and the images at ``paths``."""
    rng = np.random.default_rng(seed)
    out = [
        (f"random {h}x{w}", Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
        for h, w in RANDOM_SIZES
    ]
    for name, photo in _photos():
        w, h = photo.size
        out.append((name, photo))
        out.append((f"{name} portrait crop", photo.crop((w // 5, 0, w // 5 + (2 * h) // 3, h))))
        out.append((f"{name} at 173", shrink(photo, 173)))
    out += [(str(p), load_rgb(p)) for p in paths]
    return out


def _photos() -> list[tuple[str, Image.Image]]:
    try:
        from skimage import data
    except ImportError:
        return []
    return [(name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in _PHOTOS]


def graph_input(image: Image.Image, manifest: ModelManifest) -> npt.NDArray[np.generic]:
    """What a runtime feeds the graph for one (already shrunk) image: ``(1, 3, h, w)``."""
    if manifest.input.dtype == "uint8":
        return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)[None])
    cfg = Preprocessing(mean=manifest.input.mean, std=manifest.input.std, max_side=None)
    return prepare(image, cfg)[None]


def reference_descriptors(
    model: RetrievalModel, manifest: ModelManifest, images: Sequence[Image.Image], whitening: WhiteningChoice
) -> npt.NDArray[np.float32]:
    """The PyTorch descriptors the graph should give for (already shrunk) ``images``.

    A graph that leaves multi-scale to the runtime gives single-scale descriptors, without whitening.
    """
    cfg = Preprocessing(mean=manifest.input.mean, std=manifest.input.std, max_side=None)
    arrays = [prepare(im, cfg) for im in images]
    ms = manifest.multiscale
    scales = ms.scales if ms.in_graph or len(ms.scales) == 1 else SINGLE_SCALE
    vecs = extract_descriptors(model.net, arrays, scales=scales, msp=ms.msp, batch_size=1)
    if manifest.whitening is None or manifest.whitening.kind == "fc" or scales != ms.scales:
        return vecs
    lw = pick_whitening(model, whitening, scales)
    return lw.reduced(manifest.output_dim).apply(vecs) if lw is not None else vecs


def _compare(
    label: str, image: Image.Image, got: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]
) -> CaseResult:
    if got.shape != ref.shape:  # a graph of another dimension: fails any tolerance
        return CaseResult(label=label, height=image.height, width=image.width, max_abs_diff=np.inf, cosine=-1)
    got64, ref64 = got.astype(np.float64), ref.astype(np.float64)
    norms = float(np.linalg.norm(got64) * np.linalg.norm(ref64))
    return CaseResult(
        label=label,
        height=image.height,
        width=image.width,
        max_abs_diff=float(np.abs(got64 - ref64).max()),
        cosine=float(got64 @ ref64) / max(norms, 1e-12),
    )
