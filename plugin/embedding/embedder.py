"""The ONNX embedder: images in, L2-normalised descriptors out, preprocessing from the model's manifest.

The exported graph does everything after resizing (normalisation, network, pooling, whitening,
multi-scale when it is in the graph), so this class only shrinks images as the manifest says, lays
them out as NCHW and batches images of identical shape together (no padding: padding would change
the pooled descriptor).
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ...errors import ConfigError, ImageError, ModelError
from ...manifest import ModelManifest
from ...onnx_manifest import manifest_of_session
from ...parallel import bounded_map
from ...preprocess import (
    DECODE_MODES,
    DEFAULT_DECODE,
    Box,
    DecodeMode,
    crop_and_shrink,
    draft_scale,
    shrink_reduced,
    to_array,
)
from ...protocols import FloatRows
from ..inputs.files import read_file_capped
from ..inputs.images import ImageLoadConfig, ScaledImage, load_scaled_image_bytes
from ..inputs.memory import MemoryBudget, decode_cost
from .sessions import default_threads, open_session, resolve_providers

InputArray = npt.NDArray[Any]
"""One prepared image, ``(3, h, w)``: uint8 pixels or normalised float32, as the model's input wants."""

EmbedInput = Image.Image | bytes | str | os.PathLike[str] | InputArray
"""What ``OnnxEmbedder.embed`` takes per image: a PIL image, image file bytes, a path, or a prepared array."""

MAX_PARALLEL_RUNS = 2
"""Default cap on concurrent CPU runs: each holds its own activations (about 300 MB for Lite0 at
1024 px), so the cap, not the core count, bounds the model's memory (docs/runtime.md#memory)."""


DECODE_ENV = "GEMSEARCH_DECODE"


DECODE_BUDGET_BYTES = 256 * 2**20
"""What the decodes of all embedders in a process may hold at once (peak bytes from the image's
header, ``decode_cost``): a drafted JPEG takes ~12 MB at 1024 px, so they run side by side; full-size
decodes (exact mode, PNG, TIFF) of large photos take one turn each instead of one per worker."""
_DECODE_BUDGET = MemoryBudget(DECODE_BUDGET_BYTES)


def default_decode() -> DecodeMode:
    """The decode mode of embedders not given one: ``$GEMSEARCH_DECODE`` (``draft``/``exact``, which
    ``--exact-decode`` sets for the command's process), else ``DEFAULT_DECODE``."""
    value = os.environ.get(DECODE_ENV) or DEFAULT_DECODE
    if value not in DECODE_MODES:
        raise ConfigError(f"${DECODE_ENV} is {value!r}; expected one of {', '.join(DECODE_MODES)}")
    return value


def bulk_parallel_runs(providers: Sequence[str] | None = None) -> int:
    """Concurrent runs for bulk embedding: on CPU one per core up to ``MAX_PARALLEL_RUNS`` (on 2
    cores two single-thread runs embedded ~16% more images/s than one run with two threads; beyond
    that, more runs buy little and cost memory: the threads are split among the runs instead); one
    on a GPU, which parallelises inside each run."""
    if resolve_providers(providers)[0] != "CPUExecutionProvider":
        return 1
    return min(MAX_PARALLEL_RUNS, default_threads())


def prepare_image(
    manifest: ModelManifest, image: Image.Image | ScaledImage, crop: Box | None = None
) -> InputArray:
    """``OnnxEmbedder.prepare`` without a session: decode workers prepare images for embedders
    running elsewhere (Ray's decode tasks) from the model's manifest alone."""
    spec = manifest.input
    image = _shrunk(image, crop, spec.max_side)
    if spec.dtype == "uint8":
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    return to_array(image, spec.mean, spec.std)


class OnnxEmbedder:
    """Embeds images with an exported gemsearch model (satisfies the ``Embedder`` protocol).

    ``providers``: onnxruntime execution providers (default: TensorRT, CUDA, CPU, whichever exist);
    ``threads``: CPU threads in all (default: the CPUs this process may use); ``batch_size``: most
    images of one shape run together; ``parallel_runs``: batches run at once by ``run_grouped``, the
    threads split among them. Photos mostly differ in size, so batches are small, and on small inputs
    onnxruntime's intra-op threads idle at every sync point: running different images side by side
    keeps the cores busier than more threads per image. ``batch_pixels`` caps the pixels of one
    batch on CPU (default: one image of ``max_side`` x ``max_side``; a batch's activations grow with
    its pixels, and batching large images gains nothing on CPU). ``decode``: how JPEG files and bytes
    are decoded (``DecodeMode``, default ``default_decode()``); images handed over decoded are shrunk
    as in exact mode.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        batch_size: int = 8,
        parallel_runs: int = 1,
        batch_pixels: int | None = None,
        decode: DecodeMode | None = None,
    ) -> None:
        if batch_size < 1 or parallel_runs < 1:
            raise ModelError("batch_size and parallel_runs must be at least 1")
        self.path = str(path)
        self.parallel_runs = parallel_runs
        self.decode: DecodeMode = decode or default_decode()
        intra = max(1, (threads or default_threads()) // parallel_runs)
        self.session = open_session(path, providers, intra)
        self.manifest: ModelManifest = manifest_of_session(self.session, self.path)
        self.batch_size = batch_size
        self._input, self._output = self._check_signature()
        self._on_gpu = self.providers[0] != "CPUExecutionProvider"
        side = self.manifest.input.max_side
        self.batch_pixels = batch_pixels or (2**62 if self._on_gpu else side * side)

    def _check_signature(self) -> tuple[str, str]:
        # manifest_of_session has checked the input and output against the manifest
        ms = self.manifest.multiscale
        if len(ms.scales) > 1 and not ms.in_graph:
            raise ModelError(
                f"{self.path}: multi-scale {ms.scales} outside the graph is not supported by the runtime; "
                "export with the scales in the graph (gemsearch export onnx --multiscale)"
            )
        return self.session.get_inputs()[0].name, self.session.get_outputs()[0].name

    @property
    def output_dim(self) -> int:
        return self.manifest.output_dim

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    @property
    def draft_side(self) -> int | None:
        """The side JPEG files are draft-decoded towards (None: exact decoding, or no shrinking)."""
        return self.manifest.input.max_side if self.decode == "draft" else None

    def prepare_bytes(
        self, data: bytes, config: ImageLoadConfig | None = None, name: str = "<bytes>"
    ) -> InputArray:
        """``prepare(decode_bytes(...))``, the decode's memory reserved from the process's decode
        budget first (``DECODE_BUDGET_BYTES``), so many workers never hold many full-size images."""
        cfg = config or ImageLoadConfig()
        with _DECODE_BUDGET.hold(self._decode_cost(data, cfg)):
            return self.prepare(self.decode_bytes(data, cfg, name))

    def _decode_cost(self, data: bytes, cfg: ImageLoadConfig) -> int:
        try:
            with Image.open(io.BytesIO(data)) as im:
                width, height, mode, fmt = im.width, im.height, im.mode, im.format
        except Exception:  # not an image Pillow can read: the decoder refuses it before any pixel
            return len(data)
        side = self.draft_side
        if side is not None and fmt in ("JPEG", "MPO") and width > 0 and height > 0:
            scale = draft_scale((width, height), side)
            width, height = -(-width // scale), -(-height // scale)
        return len(data) + decode_cost(width, height, mode, cfg.max_pixels, fmt)

    def decode_bytes(
        self, data: bytes, config: ImageLoadConfig | None = None, name: str = "<bytes>"
    ) -> ScaledImage:
        """Image file bytes decoded as this embedder's ``decode`` mode says (see ``prepare``)."""
        return load_scaled_image_bytes(data, config, name, self.draft_side)

    # ---------------------------------------------------------------- preprocessing

    def prepare(self, image: Image.Image | ScaledImage, crop: Box | None = None) -> InputArray:
        """An RGB image as model input ``(3, h, w)``: cropped (box in full-image pixels, shrunk by the
        factor the full image would get), shrunk to the manifest's ``max_side``, laid out NCHW. A
        ``ScaledImage`` decoded at a reduced scale is shrunk to the size its full image would get (a
        crop box is scaled down with it)."""
        return prepare_image(self.manifest, image, crop)

    # ---------------------------------------------------------------- inference

    def run(self, batch: InputArray) -> FloatRows:
        """Descriptors of a prepared batch ``(n, 3, h, w)`` (all images of one size)."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ImageError(f"expected a (n, 3, h, w) batch, got shape {batch.shape}", reason="bad_input")
        if self._on_gpu:
            return self._checked(self._run_bound(batch), len(batch))
        out = self.session.run([self._output], {self._input: batch})[0]
        return self._checked(np.asarray(out, dtype=np.float32), len(batch))

    def _checked(self, out: FloatRows, n: int) -> FloatRows:
        # the load checked the output size; a graph that answers otherwise on some input is broken
        if out.shape != (n, self.output_dim):
            raise ModelError(
                f"{self.path}: {n} image(s) gave output of shape {out.shape}, "
                f"the manifest promises ({n}, {self.output_dim})"
            )
        return out

    def _run_bound(self, batch: InputArray) -> FloatRows:
        # IO binding: the input goes to the device once and the output comes back once, without
        # onnxruntime's per-run copies through its own staging buffers.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self._input, np.ascontiguousarray(batch))
        binding.bind_output(self._output)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)

    def embed_prepared(self, arrays: Sequence[InputArray]) -> FloatRows:
        """Descriptors of prepared images in input order, same-shape images batched together."""
        out = np.empty((len(arrays), self.output_dim), dtype=np.float32)
        for indices, vectors in self.run_grouped(enumerate(arrays)):
            out[indices] = vectors
        return out

    def run_grouped(self, items: Iterable[tuple[int, InputArray]]) -> Iterator[tuple[list[int], FloatRows]]:
        """Run ``(key, array)`` pairs in batches of one shape (up to ``batch_size`` images and
        ``batch_pixels`` pixels); yields the keys of each batch with its descriptors, in no particular
        order. At most ``4 * batch_size`` images wait for company: then the largest group runs as it
        is, so memory stays flat on mixed sizes. With ``parallel_runs > 1`` that many batches run at
        once (onnxruntime sessions are thread-safe)."""
        groups = self._groups(items)
        if self.parallel_runs == 1:
            yield from (self._run_group(group) for group in groups)
            return
        with ThreadPoolExecutor(self.parallel_runs, thread_name_prefix="gemsearch-onnx") as pool:
            yield from bounded_map(pool, self._run_group, groups, 2 * self.parallel_runs)

    def _groups(self, items: Iterable[tuple[int, InputArray]]) -> Iterator[list[tuple[int, InputArray]]]:
        groups: defaultdict[tuple[int, ...], list[tuple[int, InputArray]]] = defaultdict(list)
        waiting = 0
        for key, array in items:
            group = groups[array.shape]
            group.append((key, array))
            waiting += 1
            full = len(group) >= self._batch_limit(array.shape)
            if not full and waiting < 4 * self.batch_size:
                continue
            if not full:
                group = max(groups.values(), key=len)
            waiting -= len(group)
            yield list(group)
            group.clear()
        for group in groups.values():
            if group:
                yield list(group)

    def _batch_limit(self, shape: tuple[int, ...]) -> int:
        """Images of ``shape`` per batch: ``batch_size``, fewer where their pixels pass ``batch_pixels``."""
        pixels = int(np.prod(shape[-2:]))
        return max(1, min(self.batch_size, self.batch_pixels // max(1, pixels)))

    def _run_group(self, group: list[tuple[int, InputArray]]) -> tuple[list[int], FloatRows]:
        keys = [k for k, _ in group]
        return keys, self.run(np.stack([a for _, a in group]))

    def embed(
        self, images: EmbedInput | Sequence[EmbedInput], *, config: ImageLoadConfig | None = None
    ) -> FloatRows:
        """``(n, d)`` float32 descriptors, L2-normalised, one row per image in input order.

        Each image is a PIL image, the bytes of an image file, its path, or an already prepared
        array ``(3, h, w)``; one image not in a list gives one row. Bytes and files are decoded by the
        plugin's loader (format from the content, EXIF orientation applied) within ``config``'s caps.
        """
        if isinstance(images, (Image.Image, bytes, str, os.PathLike)):
            images = [images]
        arrays = [
            im if isinstance(im, np.ndarray) else self.prepare(self._decoded(im, config)) for im in images
        ]
        return self.embed_prepared(arrays)

    def _decoded(
        self, image: Image.Image | bytes | str | os.PathLike[str], config: ImageLoadConfig | None
    ) -> Image.Image | ScaledImage:
        if isinstance(image, Image.Image):
            return image
        cfg = config or ImageLoadConfig()
        data = image if isinstance(image, bytes) else read_file_capped(Path(image), None, cfg.max_bytes)
        return self.decode_bytes(data, cfg, "<bytes>" if isinstance(image, bytes) else str(image))

    def embed_image(self, image: Image.Image | ScaledImage, crop: Box | None = None) -> FloatRows:
        """``(d,)`` descriptor of one image, optionally of a crop of it (a query region)."""
        return np.asarray(self.run(self.prepare(image, crop)[None])[0], dtype=np.float32)

    def __repr__(self) -> str:
        m = self.manifest
        return f"OnnxEmbedder({m.name}@{m.version8}, dim={m.output_dim}, providers={self.providers})"


def _shrunk(image: Image.Image | ScaledImage, crop: Box | None, max_side: int) -> Image.Image:
    scaled = image if isinstance(image, ScaledImage) else ScaledImage(image, image.size)
    pil, scale = scaled.image, scaled.scale
    if pil.mode != "RGB":
        pil = pil.convert("RGB")
    if crop is not None:
        box = crop if scale == 1 else (crop[0] / scale, crop[1] / scale, crop[2] / scale, crop[3] / scale)
        return crop_and_shrink(pil, box, max_side)
    return shrink_reduced(pil, scaled.full_size, scale, max_side)
