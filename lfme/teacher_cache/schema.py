"""The teacher cache's schema and rows: the Arrow columns, the rows in memory (full or top-k), and what a cache is built from."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pyarrow as pa

from lfme.subsets import Subset


FORMAT = "lfme-teacher-cache/1"
MANIFEST_NAME = "manifest.json"
SCHEMA_METADATA_KEY = b"lfme"
DATA_DIR_PREFIX = "data-"
_PART_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class CacheMismatchError(ValueError):
    """The cache on disk was built from other experts or data than the caller expects."""


class CacheDamagedError(ValueError):
    """A shard on disk is not the one the manifest recorded (truncated, overwritten, unreadable)."""


VIEW_WIDTH = 9  # numbers per stored view (lfme.data.views.VIEW_FIELDS)
# How a part's views are shared among its samples: K each in one row, or by the student's draws over several rows (TeacherRows).
ALLOTS = ("uniform", "draws")


def arrow_schema(num_classes: int, top_k: tuple[int, int] | None = None, views: int = 1, allot: str = "uniform") -> pa.Schema:
    """The documented Arrow schema of a part's table (without the `lfme` metadata).

    `top_k`: (K, L) for a top-k cache (`TopK`): K kept logits and their
    classes, and one rest logit per subset, instead of the C logits.
    `views`: signal columns `views` times as wide, and the views' parameters.
    `allot` "draws": rows of augmented views (their parameters too) at any width.
    """
    if top_k is None:
        signal = [pa.field("logits", pa.list_(pa.float16(), int(num_classes) * views), nullable=False)]
    else:
        width, num_subsets = top_k
        signal = [
            pa.field("topk_logits", pa.list_(pa.float16(), int(width) * views), nullable=False),
            pa.field("topk_classes", pa.list_(pa.int32(), int(width) * views), nullable=False),
            pa.field("rest_logits", pa.list_(pa.float16(), int(num_subsets) * views), nullable=False),
        ]
    if views > 1 or allot == "draws":
        signal.append(pa.field("view_params", pa.list_(pa.float32(), VIEW_WIDTH * views), nullable=False))
    return pa.schema(
        [
            pa.field("sample_id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("subset", pa.int32(), nullable=False),
            *signal,
            pa.field("confidence", pa.float32(), nullable=False),
        ]
    )


def top_k_shape(top_k: int, subsets: list[dict]) -> tuple[int, int]:
    """(K, L) of a top-k cache: sum_l min(k, |S_l|) kept logits, L subsets."""
    return sum(min(int(top_k), len(s["classes"])) for s in subsets), len(subsets)


# --------------------------------------------------------------------------- rows


@dataclass(eq=False)
class TopK:
    """The teacher signal of a top-k cache (`cache.top_k`): per expert, its k largest logits and one for the rest.

    Expert l's logits over its subset S_l are rebuilt (`dense`) as: each kept
    class gets its own logit; every other class of S_l gets

        m_l = log( sum_{j in S_l, not kept} exp(z_j) / (|S_l| - k) ),

    the log of the dropped classes' mean exp(logit). The softmax over S_l at
    temperature 1 is then exact on the kept classes and spreads the rest of
    the mass evenly over the dropped ones; at temperature T the KD target is
    the softmax of the rebuilt logits / T (the dropped classes flattened to
    one value). The argmax within S_l, hence Acc_E, is unchanged: m_l is at
    most the largest dropped logit. A subset of at most k classes keeps all.
    """

    k: int
    values: np.ndarray  # float16 (n, K): the kept logits, subset by subset, largest first
    classes: np.ndarray  # int32 (n, K): their global class indices
    rest: np.ndarray  # float16 (n, L): m_l per subset (0 where S_l keeps every class)
    owner: np.ndarray  # int64 (C,): the subset of each class

    def map_arrays(self, f: Callable[[np.ndarray], np.ndarray]) -> TopK:
        """The same signal with `f` applied to each per-row array (values, classes, rest): a row selection, a reshape."""
        return TopK(self.k, f(self.values), f(self.classes), f(self.rest), self.owner)

    def take(self, index) -> TopK:
        return self.map_arrays(lambda a: a[index])

    @staticmethod
    def concat(pieces: list[TopK]) -> TopK:
        first = pieces[0]
        return TopK(
            first.k,
            np.concatenate([p.values for p in pieces]),
            np.concatenate([p.classes for p in pieces]),
            np.concatenate([p.rest for p in pieces]),
            first.owner,
        )

    def dense(self, positions) -> np.ndarray:
        """(len(positions), C) float32 logits rebuilt in global class order."""
        rest = np.asarray(self.rest[positions], dtype=np.float32)
        out = rest[:, self.owner]
        np.put_along_axis(out, np.asarray(self.classes[positions], dtype=np.int64), np.asarray(self.values[positions], dtype=np.float32), axis=1)
        return out


@dataclass(eq=False)
class TeacherRows:
    """The teacher signal of one part, column-wise; row k describes sample_ids[k].

    A full cache has `logits`; a top-k cache has `topk` instead (and `logits`
    None). `dense` gives either as float32 logits in global class order.
    With `views` > 1 each row holds the signal of that many augmented views,
    view by view (`logits` (n, views x C)), and `view_params` (n, views x 9)
    their parameters; `dense` then takes the view of each row.

    `allot` "draws" (`cache.allot`): rows of augmented views (with
    `view_params` even at one view a row) where a sample owns one or more
    consecutive rows, its V_i views in view order: view v of a sample whose
    first row is r is slot v mod W of row r + v div W (W = `views`). Rows are
    sorted by sample id, so they are sorted by (sample id, view) too.
    "uniform": one row per sample.
    """

    sample_ids: np.ndarray  # int64 (n,)
    labels: np.ndarray  # int64 (n,)
    subsets: np.ndarray  # int32 (n,)
    logits: np.ndarray | None  # float16 (n, C), global class order
    confidence: np.ndarray  # float32 (n,)
    topk: TopK | None = None
    views: int = 1
    view_params: np.ndarray | None = None  # float32 (n, views x VIEW_WIDTH) when augmented
    allot: str = "uniform"
    # (the sample_ids array it was computed for, argsort or None when already sorted)
    _index: tuple | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return int(np.shape(self.sample_ids)[0])

    @property
    def num_classes(self) -> int:
        return int(self.topk.owner.size if self.topk is not None else np.shape(self.stored_logits())[1] // self.views)

    @property
    def augmented(self) -> bool:
        """Whether the rows hold augmented views, each with its parameters, of which a lookup must name one."""
        return self.views > 1 or self.allot == "draws"

    def stored_logits(self) -> np.ndarray:
        """`logits`, which rows without `topk` hold (a full cache's); ValueError for rows with neither."""
        if self.logits is None:
            raise ValueError("these teacher rows hold neither logits nor a top-k signal")
        return self.logits

    def dense(self, positions, views=None) -> np.ndarray:
        """The rows at `positions` as (len(positions), C) float32 logits.

        `views` (augmented rows only): the view of each, counted from the row
        at its position, a sample's first (`rows_for`).
        """
        if not self.augmented:
            if self.topk is not None:
                return self.topk.dense(positions)
            return np.asarray(self.stored_logits()[positions], dtype=np.float32)
        if views is None:
            raise ValueError(f"these rows hold augmented views ({self.views} a row, allot {self.allot}): name the view of each row")
        rows, slots = self._view_rows(np.asarray(positions, dtype=np.int64), np.asarray(views, dtype=np.int64))

        def pick(array: np.ndarray) -> np.ndarray:  # (n, W x w) -> the w columns of each view
            return array.reshape(array.shape[0], self.views, -1)[rows, slots]

        if self.topk is not None:
            return self.topk.map_arrays(pick).dense(np.arange(positions.size))
        return np.asarray(pick(self.stored_logits()), dtype=np.float32)

    def _view_rows(self, positions: np.ndarray, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, slot) of view `views[k]` of the sample whose first row is `positions[k]`; ValueError past its last view."""
        rows = positions + views // self.views
        inside = (views >= 0) & (rows < len(self))
        if not inside.all() or (self.sample_ids[np.where(inside, rows, positions)] != self.sample_ids[positions]).any():
            raise ValueError(f"a view index past the sample's stored views (views {views[:4].tolist()}... of rows {positions[:4].tolist()}...)")
        return rows, views % self.views

    def take(self, index) -> TeacherRows:
        """The rows at `index` (a slice gives views, an index array copies)."""
        return TeacherRows(
            self.sample_ids[index],
            self.labels[index],
            self.subsets[index],
            None if self.logits is None else self.logits[index],
            self.confidence[index],
            None if self.topk is None else self.topk.take(index),
            self.views,
            None if self.view_params is None else self.view_params[index],
            self.allot,
        )

    def slice(self, start: int, stop: int) -> TeacherRows:
        """Rows start..stop-1 (views, no copy)."""
        return self.take(slice(start, stop))

    @staticmethod
    def concat(pieces: list[TeacherRows]) -> TeacherRows:
        """The pieces (at least one) one after another; each holds what the first does (logits or top-k, view parameters or not)."""
        first = pieces[0]
        if len({p.allot for p in pieces}) > 1:
            raise ValueError(f"teacher rows to concatenate: they mix allot {sorted({p.allot for p in pieces})}")
        return TeacherRows(
            sample_ids=np.concatenate([p.sample_ids for p in pieces]),
            labels=np.concatenate([p.labels for p in pieces]),
            subsets=np.concatenate([p.subsets for p in pieces]),
            logits=None if first.topk is not None else np.concatenate(_each(pieces, lambda p: p.logits, "logits")),
            confidence=np.concatenate([p.confidence for p in pieces]),
            topk=None if first.topk is None else TopK.concat(_each(pieces, lambda p: p.topk, "a top-k signal")),
            views=first.views,
            view_params=None if first.view_params is None else np.concatenate(_each(pieces, lambda p: p.view_params, "view parameters")),
            allot=first.allot,
        )

    def rows_for(self, sample_ids) -> np.ndarray:
        """Row positions (int64) of `sample_ids`, in the order given: each sample's first row.

        Vectorised binary search on the sorted ids (rows read from a cache are
        sorted by sample_id; unsorted rows are searched through an argsort
        computed once). Raises KeyError naming the first id not present.
        """
        ids = np.asarray(self.sample_ids)
        query = np.asarray(sample_ids, dtype=np.int64).reshape(-1)
        if self._index is None or self._index[0] is not self.sample_ids:
            is_sorted = ids.size < 2 or bool(np.all(ids[1:] >= ids[:-1]))
            self._index = (self.sample_ids, None if is_sorted else np.argsort(ids, kind="stable"))
        sorter = self._index[1]
        if ids.size == 0:
            if query.size:
                raise KeyError(f"sample_id {int(query[0])} is not in the teacher cache (it holds no rows)")
            return np.empty(0, dtype=np.int64)
        pos = np.searchsorted(ids, query, sorter=sorter)
        pos = np.minimum(pos, ids.size - 1)
        if sorter is not None:
            pos = sorter[pos]
        hit = ids[pos] == query
        if not hit.all():
            missing = int(query[np.argmin(hit)])
            raise KeyError(f"sample_id {missing} is not in the teacher cache ({ids.size} rows)")
        return pos.astype(np.int64, copy=False)


T = TypeVar("T")


def _each(pieces: list[TeacherRows], part: Callable[[TeacherRows], T | None], what: str) -> list[T]:
    """`part` of every piece, which each must hold (ValueError naming `what` if one does not)."""
    found = [part(p) for p in pieces]
    present = [x for x in found if x is not None]
    if len(present) < len(found):
        raise ValueError(f"teacher rows to concatenate: some hold {what}, others do not")
    return present


# ------------------------------------------------ what a cache is built from


def subset_records(subsets: Sequence[Subset]) -> list[dict]:
    """The manifest's form of the experts' subsets (`Subset.record`)."""
    return [s.record() for s in subsets]


def _normalise_experts(experts) -> dict[str, dict]:
    """name -> {"sha256": hex, ...}; a bare string value is taken as the sha256."""
    out = {}
    for name, info in dict(experts).items():
        if isinstance(info, str):
            info = {"sha256": info}
        else:
            info = dict(info)
        if not isinstance(info.get("sha256"), str):
            raise ValueError(f"expert {name!r} has no sha256 string: {info!r}")
        out[str(name)] = info
    return out


def _validate_subsets(subsets: list[dict], num_classes: int) -> np.ndarray:
    """Subsets must partition 0..C-1; returns class -> subset index."""
    if not subsets or num_classes < 1:
        raise ValueError("subsets is empty: the cache needs the experts' subsets of classes")
    owner = np.full(num_classes, -1, dtype=np.int64)
    for i, s in enumerate(subsets):
        for c in s["classes"]:
            if not 0 <= c < num_classes:
                raise ValueError(f"subset {s['name']!r} lists class {c}, outside 0..{num_classes - 1}")
            if owner[c] >= 0:
                raise ValueError(f"class {c} is in subsets {subsets[owner[c]]['name']!r} and {s['name']!r}")
            owner[c] = i
    if (owner < 0).any():
        raise ValueError(
            f"class {int(np.argmin(owner))} is in no subset: the subsets must cover all {num_classes} classes"
        )
    return owner
