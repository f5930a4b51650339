"""The ONNX embedder: images in, L2-normalised descriptors out, preprocessing from the model's manifest.

The exported graph does everything after resizing (normalisation, network, pooling, whitening,
multi-scale when it is in the graph), so this class only shrinks images as the manifest says, lays
them out as NCHW and batches images of identical shape together (no padding: padding would change
the pooled descriptor).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from ...errors import ImageError, ModelError
from ...manifest import ModelManifest
from ...onnx_manifest import manifest_of_session
from ...parallel import bounded_map
from ...preprocess import Box, crop_and_shrink, shrink, to_array
from ...protocols import FloatRows
from ..inputs.images import ImageLoadConfig, load_image
from .sessions import default_threads, open_session, resolve_providers

InputArray = npt.NDArray[Any]
"""One prepared image, ``(3, h, w)``: uint8 pixels or normalised float32, as the model's input wants."""

EmbedInput = Image.Image | bytes | str | os.PathLike[str] | InputArray
"""What ``OnnxEmbedder.embed`` takes per image: a PIL image, image file bytes, a path, or a prepared array."""


def bulk_parallel_runs(providers: Sequence[str] | None = None) -> int:
    """Concurrent runs for bulk embedding: on CPU one per 2 cores (one per core on 2 cores, where two
    single-thread runs embedded ~16% more images/s than one run with two threads), at most 8; one on
    a GPU, which parallelises inside each run."""
    if resolve_providers(providers)[0] != "CPUExecutionProvider":
        return 1
    cpus = default_threads()
    return cpus if cpus <= 2 else min(8, cpus // 2)


def prepare_image(manifest: ModelManifest, image: Image.Image, crop: Box | None = None) -> InputArray:
    """``OnnxEmbedder.prepare`` without a session: decode workers prepare images for embedders
    running elsewhere (Ray's decode tasks) from the model's manifest alone."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    spec = manifest.input
    image = crop_and_shrink(image, crop, spec.max_side) if crop is not None else shrink(image, spec.max_side)
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
    keeps the cores busier than more threads per image.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        batch_size: int = 8,
        parallel_runs: int = 1,
    ) -> None:
        if batch_size < 1 or parallel_runs < 1:
            raise ModelError("batch_size and parallel_runs must be at least 1")
        self.path = str(path)
        self.parallel_runs = parallel_runs
        intra = max(1, (threads or default_threads()) // parallel_runs)
        self.session = open_session(path, providers, intra)
        self.manifest: ModelManifest = manifest_of_session(self.session, self.path)
        self.batch_size = batch_size
        self._input, self._output = self._check_signature()
        self._on_gpu = self.providers[0] != "CPUExecutionProvider"

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

    # ---------------------------------------------------------------- preprocessing

    def prepare(self, image: Image.Image, crop: Box | None = None) -> InputArray:
        """An RGB image as model input ``(3, h, w)``: cropped (box in full-image pixels, shrunk by the
        factor the full image would get), shrunk to the manifest's ``max_side``, laid out NCHW."""
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
        """Run ``(key, array)`` pairs in batches of one shape (up to ``batch_size``); yields the keys of
        each batch with its descriptors, in no particular order. At most ``4 * batch_size`` images wait
        for company: then the largest group runs as it is, so memory stays flat on mixed sizes. With
        ``parallel_runs > 1`` that many batches run at once (onnxruntime sessions are thread-safe)."""
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
            if len(group) < self.batch_size and waiting < 4 * self.batch_size:
                continue
            if len(group) < self.batch_size:
                group = max(groups.values(), key=len)
            waiting -= len(group)
            yield list(group)
            group.clear()
        for group in groups.values():
            if group:
                yield list(group)

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
        arrays = [im if isinstance(im, np.ndarray) else self.prepare(_decoded(im, config)) for im in images]
        return self.embed_prepared(arrays)

    def embed_image(self, image: Image.Image, crop: Box | None = None) -> FloatRows:
        """``(d,)`` descriptor of one image, optionally of a crop of it (a query region)."""
        return np.asarray(self.run(self.prepare(image, crop)[None])[0], dtype=np.float32)

    def __repr__(self) -> str:
        m = self.manifest
        return f"OnnxEmbedder({m.name}@{m.version8}, dim={m.output_dim}, providers={self.providers})"


def _decoded(
    image: Image.Image | bytes | str | os.PathLike[str], config: ImageLoadConfig | None
) -> Image.Image:
    return image if isinstance(image, Image.Image) else load_image(image, config)
