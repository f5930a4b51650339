"""A fault hook for tests: make an actor of a stage die (``os._exit``) at its Nth batch, once per run.

``GEMSEARCH_RAY_CRASH="embed:3,write:2"`` with ``GEMSEARCH_RAY_CRASH_DIR`` (a folder for the
markers that make each crash happen once, also across the actor's restarts) is read from the
driver's environment and handed to the actors (whose environment is the Ray node's). Unset, it
does nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CRASH_ENV = "GEMSEARCH_RAY_CRASH"
CRASH_DIR_ENV = "GEMSEARCH_RAY_CRASH_DIR"


@dataclass
class CrashPlan:
    after: int | None = None  # die when this many batches have arrived at one actor
    marker: str | None = None
    calls: int = 0

    def tick(self) -> None:
        self.calls += 1
        if self.after is None or self.marker is None or self.calls != self.after:
            return
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return  # this run's crash of the stage has happened
        os._exit(1)


def crash_plan(stage: str) -> CrashPlan:
    """The plan for ``stage`` ("embed" or "write") from the environment (none when unset)."""
    spec, folder = os.environ.get(CRASH_ENV, ""), os.environ.get(CRASH_DIR_ENV)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if name == stage and folder:
            return CrashPlan(after=int(count), marker=str(Path(folder) / f"crashed-{stage}"))
    return CrashPlan()
