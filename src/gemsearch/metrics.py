"""Retrieval evaluation, with the definitions of cirtorch's ``utils/evaluate.py``.

Average precision is the trapezoidal area under the precision-recall curve; images in a query's
``junk`` list are removed from its ranking before scoring (neither hits nor misses); a query with no
positive (``ok``) image is left out of the mean; mP@k uses cirtorch's k, capped at the position of the
last positive retrieved. The revisited Oxford/Paris protocols derive ``ok``/``junk`` from the
``easy``/``hard``/``junk`` lists (see ``RevisitedGroundTruth.protocol``).

Convention: a ranking lists database indices, best first, one ranking per query: row ``i`` of an
``(nq, k)`` integer array, or the ``i``-th of a list of 1-D arrays (lengths may differ, e.g. top-k
answers of a k-NN index; positives not retrieved count as never found). cirtorch's ``ranks`` are
``(n_db, nq)`` columns: pass ``ranks.T``. ``rank_by_similarity`` ranks an ``(nq, n_db)`` similarity
matrix; ``rank_by_inner_product`` ranks ``(n, d)`` descriptor rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import EvaluationError
from .manifest import EvalResult

log = logging.getLogger(__name__)

KAPPAS: tuple[int, ...] = (1, 5, 10)
Protocol = Literal["easy", "medium", "hard"]
PROTOCOLS: tuple[Protocol, ...] = ("easy", "medium", "hard")
Rankings = npt.ArrayLike | Sequence[npt.ArrayLike]
IndexArray = npt.NDArray[np.int64]


class _GroundTruth(BaseModel):
    # extra="ignore": cirtorch's gnd dicts also carry the query box ("bbx")
    model_config = ConfigDict(frozen=True, extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _index_tuple(cls, value: Any) -> Any:
        # cirtorch's pickles hold numpy arrays; pydantic does not take those as tuples by itself
        return tuple(np.asarray(value).ravel().tolist()) if isinstance(value, np.ndarray) else value


class QueryGroundTruth(_GroundTruth):
    """Database indices of one query's positives (``ok``) and of images to ignore (``junk``)."""

    ok: tuple[int, ...]
    junk: tuple[int, ...] = ()


class RevisitedGroundTruth(_GroundTruth):
    """One query of the revisited ROxford5k/RParis6k ground truth."""

    easy: tuple[int, ...]
    hard: tuple[int, ...]
    junk: tuple[int, ...] = ()

    def protocol(self, name: Protocol) -> QueryGroundTruth:
        """This query's ok/junk lists under a protocol.

        Easy: ok = easy, junk = junk + hard. Medium: ok = easy + hard, junk = junk.
        Hard: ok = hard, junk = junk + easy.
        """
        if name == "easy":
            return QueryGroundTruth(ok=self.easy, junk=self.junk + self.hard)
        if name == "medium":
            return QueryGroundTruth(ok=self.easy + self.hard, junk=self.junk)
        if name == "hard":
            return QueryGroundTruth(ok=self.hard, junk=self.junk + self.easy)
        raise EvaluationError(f"unknown protocol {name!r}; expected one of {PROTOCOLS}")


class RetrievalScore(BaseModel):
    """mAP and mP@k over the queries that have positives; per-query values (None: no positives)."""

    model_config = ConfigDict(frozen=True)

    mean_ap: float = Field(ge=0, le=1)
    mp_at: dict[int, float]
    ap: tuple[float | None, ...]
    p_at: tuple[dict[int, float] | None, ...]

    @property
    def n_evaluated(self) -> int:
        return sum(a is not None for a in self.ap)

    def as_eval_result(
        self, dataset: str, protocol: str = "standard", multiscale: bool = False
    ) -> EvalResult:
        """The summary stored in a ModelManifest."""
        return EvalResult(
            dataset=dataset, protocol=protocol, mean_ap=self.mean_ap, mp_at=self.mp_at, multiscale=multiscale
        )


class RevisitedScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    easy: RetrievalScore
    medium: RetrievalScore
    hard: RetrievalScore

    def __getitem__(self, protocol: Protocol) -> RetrievalScore:
        score: RetrievalScore = getattr(self, protocol)
        return score


def compute_ap(positive_ranks: npt.ArrayLike, n_positives: int) -> float:
    """Trapezoidal AP from the 0-based ranks of the positives found, ascending, junk already removed.

    The j-th positive found (j = 0, 1, ...) at rank r adds a trapezoid of width 1/n_positives between
    the precision just before it, j/r (1 when r = 0), and just after it, (j + 1)/(r + 1).
    Positives that were never retrieved add nothing.
    """
    ranks = np.asarray(positive_ranks, dtype=np.float64).ravel()
    if n_positives <= 0 or ranks.size > n_positives:
        raise EvaluationError(f"{ranks.size} positive ranks for {n_positives} positives")
    if ranks.size and (ranks[0] < 0 or np.any(np.diff(ranks) <= 0)):
        raise EvaluationError("positive ranks must be distinct, non-negative and ascending")
    j = np.arange(ranks.size, dtype=np.float64)
    before = np.divide(j, ranks, out=np.ones_like(j), where=ranks > 0)
    after = (j + 1) / (ranks + 1)
    return float(np.sum(before + after) / (2 * n_positives))


def rank_by_similarity(scores: npt.ArrayLike, top_k: int | None = None) -> IndexArray:
    """``(nq, n_db)`` similarities -> ``(nq, k)`` database indices, most similar first.

    Ties keep database order (a stable sort), so results do not depend on the sort algorithm.
    """
    s = np.asarray(scores)
    if s.ndim != 2:
        raise EvaluationError(f"scores must be (nq, n_db), got shape {s.shape}")
    if top_k is not None and top_k < 1:
        raise EvaluationError(f"top_k must be positive, got {top_k}")
    if not np.all(np.isfinite(s)):
        raise EvaluationError("scores contain NaN or infinity")
    order = np.argsort(-s, axis=1, kind="stable")
    return np.ascontiguousarray(order[:, :top_k], dtype=np.int64)


def rank_by_inner_product(
    queries: npt.ArrayLike, database: npt.ArrayLike, top_k: int | None = None
) -> IndexArray:
    """Rank ``(n_db, d)`` database descriptors for each of ``(nq, d)`` query descriptors by inner product."""
    q, db = np.atleast_2d(np.asarray(queries)), np.atleast_2d(np.asarray(database))
    if q.shape[1] != db.shape[1]:
        raise EvaluationError(f"query dimension {q.shape[1]} != database dimension {db.shape[1]}")
    return rank_by_similarity(q @ db.T, top_k)


def compute_map(
    rankings: Rankings,
    ground_truth: Sequence[QueryGroundTruth | Mapping[str, Any]],
    kappas: Sequence[int] = KAPPAS,
) -> RetrievalScore:
    """mAP and mP@k of one ranking per query against ``ok``/``junk`` lists (see the module docstring)."""
    gnd = [QueryGroundTruth.model_validate(g) for g in ground_truth]
    rows = _as_rankings(rankings, len(gnd))
    if any(k < 1 for k in kappas):
        raise EvaluationError(f"kappas must be positive, got {list(kappas)}")
    per_query = [_evaluate_query(row, g, kappas) for row, g in zip(rows, gnd, strict=True)]
    scored = [r for r in per_query if r is not None]
    if not scored:
        raise EvaluationError(f"none of the {len(gnd)} queries has a positive image")
    if len(scored) < len(gnd):
        log.info("%d of %d queries have no positive image and are left out", len(gnd) - len(scored), len(gnd))
    return RetrievalScore(
        mean_ap=float(np.mean([ap for ap, _ in scored])),
        mp_at={k: float(np.mean([p[k] for _, p in scored])) for k in kappas},
        ap=tuple(None if r is None else r[0] for r in per_query),
        p_at=tuple(None if r is None else r[1] for r in per_query),
    )


def compute_map_revisited(
    rankings: Rankings,
    ground_truth: Sequence[RevisitedGroundTruth | Mapping[str, Any]],
    kappas: Sequence[int] = KAPPAS,
) -> RevisitedScore:
    """The Easy, Medium and Hard protocols of the revisited Oxford/Paris benchmarks."""
    gnd = [RevisitedGroundTruth.model_validate(g) for g in ground_truth]
    rows = _as_rankings(rankings, len(gnd))
    scores = {name: compute_map(rows, [g.protocol(name) for g in gnd], kappas) for name in PROTOCOLS}
    return RevisitedScore(**scores)


def _as_rankings(rankings: Rankings, n_queries: int) -> list[IndexArray]:
    if isinstance(rankings, np.ndarray) and rankings.ndim != 2:
        raise EvaluationError(f"rankings must be (nq, k), got shape {rankings.shape}")
    rows = [np.asarray(r) for r in rankings]  # type: ignore[union-attr]
    if len(rows) != n_queries:
        raise EvaluationError(f"{len(rows)} rankings for {n_queries} queries")
    for i, row in enumerate(rows):
        if row.ndim != 1 or (row.size and not np.issubdtype(row.dtype, np.integer)):
            raise EvaluationError(f"ranking {i} is not a 1-D array of database indices")
        if row.size and row.min() < 0:
            raise EvaluationError(f"ranking {i} has a negative database index")
    return [row.astype(np.int64, copy=False) for row in rows]


def _evaluate_query(
    ranking: IndexArray, gnd: QueryGroundTruth, kappas: Sequence[int]
) -> tuple[float, dict[int, float]] | None:
    ok = np.unique(np.asarray(gnd.ok, dtype=np.int64))
    if ok.size == 0:
        return None
    pos = np.flatnonzero(np.isin(ranking, ok))
    if pos.size > ok.size:
        raise EvaluationError("a ranking lists a positive database image twice")
    # each positive moves up by the number of junk images ranked before it
    junk = np.flatnonzero(np.isin(ranking, np.asarray(gnd.junk, dtype=np.int64)))
    pos = pos - np.searchsorted(junk, pos, side="left")
    return compute_ap(pos, ok.size), _precision_at(pos, kappas)


def _precision_at(pos: IndexArray, kappas: Sequence[int]) -> dict[int, float]:
    if pos.size == 0:
        return dict.fromkeys(kappas, 0.0)
    # as cirtorch: k is capped at the 1-based position of the last positive found, so a query whose
    # only 2 positives come first scores P@10 = 1, not 0.2
    last = int(pos[-1]) + 1
    return {k: float(np.count_nonzero(pos < min(last, k))) / min(last, k) for k in kappas}


Score = RetrievalScore | RevisitedScore
_SHORT = {"easy": "E", "medium": "M", "hard": "H"}


def format_score(dataset: str, score: Score, decimals: int = 2, with_mp: bool = False) -> str:
    """One line per measure, in percent: ``ROxf: mAP E 80.10 M 62.30 H 33.00`` or ``Oxford5k: mAP 81.09``.

    ``with_mp`` adds ``ROxf: mP@1,5,10 E 90.00 80.00 70.00 | M ... | H ...``.
    """
    parts = _by_protocol(score)
    lines = [f"{dataset}: mAP " + " ".join(_labelled(label, _pct(s.mean_ap, decimals)) for label, s in parts)]
    if with_mp:
        kappas = list(parts[0][1].mp_at)
        cells = [_labelled(label, " ".join(_pct(s.mp_at[k], decimals) for k in kappas)) for label, s in parts]
        lines.append(f"{dataset}: mP@{','.join(map(str, kappas))} " + " | ".join(cells))
    return "\n".join(lines)


def format_score_table(rows: Mapping[str, Mapping[str, Score]], decimals: int = 2) -> str:
    """A markdown table of mAP in percent, laid out as the paper's tables.

    ``rows`` maps a method (``"ResNet101-GeM"``) to its results per column (``"Oxford5k"``,
    ``"Oxford5k - whiten"``); a revisited result fills three columns, ``ROxf E``, ``ROxf M``, ``ROxf H``.
    Columns appear in the order first met; a missing result shows as ``-``.
    """
    cells: dict[str, dict[str, str]] = {}
    columns: dict[str, None] = {}  # an ordered set
    for method, results in rows.items():
        cells[method] = {}
        for dataset, score in results.items():
            for label, s in _by_protocol(score):
                column = f"{dataset} {label}" if label else dataset
                columns[column] = None
                cells[method][column] = _pct(s.mean_ap, decimals)
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, row in cells.items():
        lines.append(f"| {method} | " + " | ".join(row.get(c, "-") for c in columns) + " |")
    return "\n".join(lines)


def _by_protocol(score: Score) -> list[tuple[str, RetrievalScore]]:
    if isinstance(score, RevisitedScore):
        return [(_SHORT[name], score[name]) for name in PROTOCOLS]
    return [("", score)]


def _labelled(label: str, text: str) -> str:
    return f"{label} {text}" if label else text


def _pct(value: float, decimals: int) -> str:
    return f"{100 * value:.{decimals}f}"
