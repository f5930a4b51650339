"""gemsearch: instance-level image search for OpenSearch.

Subpackages: ``gemsearch.trainer`` (torch), ``gemsearch.exporters`` (torch, onnx),
``gemsearch.plugin`` (onnxruntime, never torch) and ``gemsearch.opensearch_templates`` (JSON).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gemsearch")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
