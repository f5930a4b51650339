"""The options and the report of the bulk writer: retry policy, request sizes, per-item outcomes."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ....errors import StoreError
from ....protocols import ItemOutcome, Outcome, WriteReport

__all__ = ["BulkDoc", "BulkError", "BulkOptions", "BulkReport", "ItemOutcome", "Outcome", "RetryPolicy"]


class RetryPolicy(BaseModel):
    """Exponential backoff with jitter, bounded in attempts and in time (per request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(12, ge=1, description="tries per item, the first one included")
    initial_backoff_s: float = Field(0.2, ge=0)
    max_backoff_s: float = Field(10.0, ge=0)
    max_total_s: float = Field(300.0, gt=0, description="give up retrying a request after this long")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Sleep before try ``attempt + 1``: half the capped exponential step, plus up to as much again."""
        step = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return step / 2 + rng.uniform(0.0, step / 2)


class BulkOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_docs: int = Field(500, ge=1, description="documents per bulk request")
    max_bytes: int = Field(5_000_000, ge=1, description="body bytes per bulk request")
    retry: RetryPolicy = RetryPolicy()
    dead_letter_path: Path | None = Field(None, description="JSONL file for rejected documents")
    dead_letter_source: bool = Field(True, description="keep the rejected document in the file")
    refresh: bool = Field(True, description="refresh the index once the write is over")
    request_timeout_s: float | None = Field(None, gt=0, description="client timeout per bulk request")


@dataclass(frozen=True)
class BulkDoc:
    """One document to index under ``id``; with ``op="update"``, ``source`` is the body of an
    update action (e.g. ``{"doc": {...}}``, a partial document) for the stored document ``id``."""

    id: str
    source: Mapping[str, Any]
    op: Literal["index", "update"] = "index"


BulkReport = WriteReport  # the bulk writer's report is the store contract's


class BulkError(StoreError):
    """The cluster answered a bulk request in a way that cannot be trusted or retried."""

    def __init__(self, message: str, report: BulkReport) -> None:
        super().__init__(message)
        self.report = report
