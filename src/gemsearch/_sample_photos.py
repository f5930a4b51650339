"""Real colour photos that Python packages ship, grouped into clusters (one object or scene each)."""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ._deps import require
from .errors import ConfigError

log = logging.getLogger(__name__)

# cluster -> its photos. Colour photographs only: skimage's grey, binary and drawn images (camera,
# coins, logo, colorwheel, ...) are left out; "cat" is the same file as chelsea.
_SKIMAGE: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut",),
    "chelsea": ("chelsea",),
    "coffee": ("coffee",),
    "hubble_deep_field": ("hubble_deep_field",),
    "immunohistochemistry": ("immunohistochemistry",),
    "motorcycle": ("motorcycle_left", "motorcycle_right"),  # a stereo pair: one scene
    "retina": ("retina",),
    "rocket": ("rocket",),
}
_SKLEARN: dict[str, tuple[str, ...]] = {"china": ("china",), "flower": ("flower",)}


@dataclass(frozen=True)
class SourcePhoto:
    cluster: str
    source: str
    image: Image.Image  # RGB, longer side at most max_side


def available_clusters() -> list[str]:
    """Names of the clusters this installation can build (scikit-image's, scikit-learn's if installed)."""
    data = _skimage()
    names = [name for name, photos in _SKIMAGE.items() if all(_skimage_loader(data, p) for p in photos)]
    if importlib.util.find_spec("sklearn") is not None:
        names += list(_SKLEARN)
    return sorted(names)


def cluster_sources(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """The source photos of each named cluster; ConfigError for a name this installation lacks."""
    known = {**_SKIMAGE, **_SKLEARN}
    available = set(available_clusters()) if names else set()
    missing = sorted(set(names) - available)
    if missing:
        raise ConfigError(f"unknown or unavailable sample clusters {missing}; available: {sorted(available)}")
    return {name: known[name] for name in names}


def load_photos(
    clusters: Mapping[str, tuple[str, ...]], max_side: int, extra_photos: Sequence[Path] = ()
) -> list[SourcePhoto]:
    """Load and shrink (LANCZOS, never enlarging) the photos of ``clusters`` and the extra files."""
    photos: list[SourcePhoto] = []
    extra = {p.stem: p for p in extra_photos}
    for cluster, sources in clusters.items():
        for source in sources:
            image = _open_file(extra[source]) if cluster in extra else Image.fromarray(_array(source))
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            photos.append(SourcePhoto(cluster, source, image))
    return photos


def _skimage() -> ModuleType:
    return require("skimage.data", extra="samples", package="scikit-image")


def _skimage_loader(data: ModuleType, source: str) -> Callable[[], Any] | None:
    if source.startswith("motorcycle_"):
        # older releases named the two views; newer ones return (left, right, disparity)
        if hasattr(data, source):
            return getattr(data, source)  # type: ignore[no-any-return]
        stereo = getattr(data, "stereo_motorcycle", None)
        if stereo is None:
            return None
        side = 0 if source == "motorcycle_left" else 1
        return lambda: stereo()[side]
    return getattr(data, source, None)


def _array(source: str) -> np.ndarray[Any, Any]:
    if source in {p for photos in _SKLEARN.values() for p in photos}:
        sample = importlib.import_module("sklearn.datasets").load_sample_images()
        by_stem = {Path(f).stem: im for f, im in zip(sample.filenames, sample.images, strict=True)}
        return np.asarray(by_stem[source])
    loader = _skimage_loader(_skimage(), source)
    if loader is None:
        raise ConfigError(f"this scikit-image has no photo {source!r}")
    return np.asarray(loader())


def _open_file(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the photo {path}: {exc}") from exc
