"""Typed errors of the library. The CLI turns every ``GemsearchError`` into a readable message."""


class GemsearchError(Exception):
    """Base class of every error gemsearch raises on purpose."""


class ConfigError(GemsearchError):
    """A configuration value or file is invalid."""


class MissingDependencyError(GemsearchError, ImportError):
    """An optional dependency (an extra) is not installed."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed; install it with: pip install 'gemsearch[{extra}]'")
        self.package = package
        self.extra = extra


class WeightsUnavailableError(GemsearchError):
    """Pretrained weights could not be found locally nor downloaded."""


class ModelError(GemsearchError):
    """A model file, checkpoint or manifest is invalid or does not fit the request."""


class ImageError(GemsearchError):
    """An image could not be read or decoded."""

    def __init__(self, message: str, reason: str = "decode_error") -> None:
        super().__init__(message)
        self.reason = reason


class StoreError(GemsearchError):
    """A vector store refused an operation or is unreachable."""


class NoIndexError(StoreError):
    """The cluster answers but holds no index (alias) for ``model``: nothing was ingested for it yet."""

    def __init__(self, message: str, model: str) -> None:
        super().__init__(message)
        self.model = model

    @property
    def hint(self) -> str:
        """The fix, without the cluster's address (for answers to clients)."""
        return f"no index for model {self.model} yet: run gemsearch ingest or gemsearch index create"


class SourceError(GemsearchError):
    """A source of images (a folder, a JSONL/CSV manifest, a path list) is missing or has a bad entry.

    As a bad entry handed to an ingest: ``reason`` is its ledger reason code (``bad_row``,
    ``unreadable``, ``not_regular_file``, ...), ``key`` the shard key where the entry has one (a path
    in a folder; None for a manifest row), and ``skipped`` says it is left out by policy (a FIFO, a
    link leaving the folder) rather than failed.
    """

    def __init__(
        self,
        message: str,
        origin: str | None = None,
        *,
        reason: str = "bad_row",
        key: str | None = None,
        skipped: bool = False,
    ) -> None:
        super().__init__(message)
        self.origin = origin
        self.reason = reason
        self.key = key
        self.skipped = skipped


class EvaluationError(GemsearchError, ValueError):
    """Rankings and ground truth do not fit together (counts, indices), or nothing can be evaluated."""
