"""Descriptors for k-NN benchmarks at any size that behave like real ones, made from real ones.

Real descriptors: the default model (Lite0-GeM, ONNX, ``$GEMSEARCH_CACHE/models/lite0-gem.onnx``;
``gemsearch export default`` makes it) embeds *regions* of scikit-image's photos — random crops of
8-35% of a photo, each a distinct piece of content — and ``VIEWS`` random views of each region (crop,
rotation, perspective, scale, flip, colour, JPEG: ``gemsearch._views.random_view``), so they have the
structure of a real collection: objects seen several times, among unrelated content. The last
``HELD_OUT`` views of each region are never indexed: they are the real queries.

Synthetic descriptors, vector ``i`` a pure function of ``(seed, i)`` (so a load can stop and resume
with the same data): ``i // OBJECT_VIEWS`` names a synthetic object whose centre is a convex mixture
of two real region centres plus a Gaussian step drawn from the real centres' own covariance (the
principal directions real content varies along, not isotropic noise); each view adds a real
view-to-centre residual pair (a random combination of two residuals measured on the real set), and
every vector is L2-normalised. Queries are fresh views of indexed objects. Reduced descriptors (512,
256 dims) are the PCA projection learned on the real set, centred and renormalised, as a reduced
descriptor of a real model would be.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BENCH_CACHE = Path.home() / ".cache" / "gemsearch" / "benchmarks"
REGIONS = 24  # per photo
VIEWS = 10  # per region: VIEWS - HELD_OUT indexed, HELD_OUT queries
HELD_OUT = 2
OBJECT_VIEWS = 8  # synthetic views per synthetic object, as the real set has per region
BLOCK = 1024  # vectors generated at once; a multiple of OBJECT_VIEWS, so no object spans two blocks
CENTRE_STEP = 0.3  # scale of the covariance-shaped step away from the mixture of two real centres
VIEW_STEP = 1.0  # scale of the real residual pair added to a view
GENERATOR = 1  # bump when the recipe changes (cached ground truth is keyed by it)


def _unit(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


@dataclass
class RealSet:
    """Real descriptors: ``x`` (n, 1280), the region (object) of each row, and which are queries."""

    x: np.ndarray
    region: np.ndarray
    query: np.ndarray  # bool: a held-out view

    @property
    def indexed(self) -> np.ndarray:
        return self.x[~self.query]

    @property
    def queries(self) -> np.ndarray:
        return self.x[self.query]


def default_model() -> Path:
    from gemsearch.errors import ModelError
    from gemsearch.models_cache import resolve_model

    try:
        return resolve_model("lite0-gem")
    except ModelError:
        import subprocess

        print("exporting the default model (gemsearch export default) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "gemsearch.cli", "export", "default"], check=True)
        return resolve_model("lite0-gem")


def _regions(seed: int) -> Iterator[tuple[int, int, object]]:
    """``(region id, view number, encoded view bytes)`` for every view of every region."""
    from PIL import Image

    from gemsearch._sample_photos import available_clusters, cluster_sources, load_photos
    from gemsearch._views import random_view

    photos = load_photos(cluster_sources(available_clusters()), 1024)
    region_id = 0
    for p_index, photo in enumerate(photos):
        for r in range(REGIONS):
            rng = np.random.default_rng([seed, p_index, r])
            w, h = photo.image.size
            area, aspect = rng.uniform(0.08, 0.35), float(np.exp(rng.uniform(-0.3, 0.3)))
            cw, ch = min(w, int(w * np.sqrt(area * aspect))), min(h, int(h * np.sqrt(area / aspect)))
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            region: Image.Image = photo.image.crop((x0, y0, x0 + cw, y0 + ch))
            for v in range(VIEWS):
                yield region_id, v, random_view(region, rng).encode()
            region_id += 1


def real_set(seed: int = 0) -> RealSet:
    """The real descriptors (embedded once, then cached by model version and recipe)."""
    model = default_model()
    version = hashlib.sha256(model.read_bytes()).hexdigest()[:12]
    cache = BENCH_CACHE / f"real-regions-{version}-r{REGIONS}-v{VIEWS}-s{seed}.npz"
    if cache.is_file():
        d = np.load(cache)
        return RealSet(d["x"], d["region"], d["query"])
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder

    print("embedding real photo regions with the default model (once) ...", file=sys.stderr, flush=True)
    embedder = OnnxEmbedder(model)
    items = list(_regions(seed))
    rows = []
    for start in range(0, len(items), 32):
        rows.append(embedder.embed([b for _, _, b in items[start : start + 32]]))  # type: ignore[misc]
    x = np.concatenate(rows).astype(np.float32)
    region = np.asarray([r for r, _, _ in items])
    query = np.asarray([v >= VIEWS - HELD_OUT for _, v, _ in items])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x, region=region, query=query)
    return RealSet(x, region, query)


class Reducer:
    """PCA learned on the real set: ``x -> unit((x - mean) @ P[:, :dims])``; identity at full size."""

    def __init__(self, real: np.ndarray) -> None:
        self.mean = real.mean(0)
        _, _, vt = np.linalg.svd(real - self.mean, full_matrices=False)
        self.basis = vt.T.astype(np.float32)
        self.full = real.shape[1]

    def __call__(self, x: np.ndarray, dims: int) -> np.ndarray:
        if dims == self.full:
            return x
        if dims > self.basis.shape[1]:
            raise ValueError(f"at most {self.basis.shape[1]} PCA dims from this real set")
        return _unit((x - self.mean) @ self.basis[:, :dims])


class Synthetic:
    """Vector ``i`` of an unbounded collection, derived from the real set (see the module doc)."""

    def __init__(self, real: RealSet, seed: int = 0) -> None:
        x, region = real.indexed, real.region[~real.query]
        ids = np.unique(region)
        self.centres = _unit(np.stack([x[region == r].mean(0) for r in ids]))
        self.residuals = (x - self.centres[np.searchsorted(ids, region)]).astype(np.float32)
        spread = self.centres - self.centres.mean(0)
        _, s, vt = np.linalg.svd(spread, full_matrices=False)
        self.between = (s[:, None] * vt / np.sqrt(len(ids))).astype(np.float32)  # rows: scaled axes
        self.seed = seed

    def centre(self, objects: np.ndarray) -> np.ndarray:
        out = np.empty((len(objects), self.centres.shape[1]), dtype=np.float32)
        for row, j in enumerate(objects):
            rng = np.random.default_rng([self.seed, 1, int(j)])
            a, b = rng.integers(0, len(self.centres), 2)
            w = rng.uniform(0.0, 1.0)
            step = rng.standard_normal(len(self.between)).astype(np.float32) @ self.between
            out[row] = w * self.centres[a] + (1 - w) * self.centres[b] + CENTRE_STEP * step
        return _unit(out)

    def views(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(centres)
        r = rng.integers(0, len(self.residuals), (n, 2))
        u = rng.standard_normal((n, 2)).astype(np.float32)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        pair = u[:, :1] * self.residuals[r[:, 0]] + u[:, 1:] * self.residuals[r[:, 1]]
        return _unit(centres + VIEW_STEP * pair)

    def block(self, b: int) -> np.ndarray:
        """Vectors ``b * BLOCK .. (b + 1) * BLOCK - 1``."""
        objects = np.arange(b * BLOCK // OBJECT_VIEWS, (b + 1) * BLOCK // OBJECT_VIEWS)
        centres = np.repeat(self.centre(objects), OBJECT_VIEWS, axis=0)
        return self.views(centres, np.random.default_rng([self.seed, 2, b]))

    def rows(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(first index, vectors)`` chunks covering ``start .. stop - 1``."""
        for b in range(start // BLOCK, -(-stop // BLOCK)):
            x = self.block(b)
            lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
            yield lo, x[lo - b * BLOCK : hi - b * BLOCK]

    def queries(self, n_docs: int, n: int) -> np.ndarray:
        """``n`` fresh views (never indexed) of objects among the first ``n_docs`` vectors."""
        rng = np.random.default_rng([self.seed, 3, n_docs])
        objects = rng.integers(0, max(1, n_docs // OBJECT_VIEWS), n)
        return self.views(self.centre(objects), rng)


def exact_top(queries: np.ndarray, chunks: Iterator[tuple[int, np.ndarray]], k: int) -> np.ndarray:
    """Indices of the ``k`` largest inner products per query over all chunks (brute force, numpy)."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start, x in chunks:
        s = queries @ x.T
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, np.broadcast_to(np.arange(start, start + len(x)), s.shape)], axis=1)
        top = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_i, top, 1)
    order = np.argsort(-best_s, axis=1)
    out: np.ndarray = np.take_along_axis(best_i, order, 1)
    return out


def neighbour_profile(
    queries: np.ndarray, x: np.ndarray, ranks: tuple[int, ...] = (1, 10, 100)
) -> dict[str, float]:
    """Mean similarity of each query's r-th exact neighbour: how crowded the neighbourhoods are."""
    s = -np.sort(-(queries @ x.T), axis=1)
    return {f"sim_at_{r}": round(float(s[:, r - 1].mean()), 4) for r in ranks if r <= x.shape[0]}
