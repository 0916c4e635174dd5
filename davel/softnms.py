"""1-D (Soft-)NMS on temporal segments, reproducing UnAV's ``batched_nms``.

The reference is a C++ extension (``nms_1d_cpu``). This port keeps its
arithmetic (float32 throughout, segment length ``end - start + 1e-6``) and its
iteration order, because the order decides which candidate wins a tie:

* Soft-NMS fills positions ``i = 0, 1, ...`` of an array of candidates: it
  picks the first maximum of the remaining scores (linear scan), swaps it into
  ``i``, multiplies every later score by ``exp(-iou**2 / sigma)`` and drops a
  candidate that falls below ``min_score`` by moving the *last* candidate into
  its slot.
* Hard NMS keeps ``score > min_score``, visits candidates by descending score
  (``torch.sort``) and suppresses later ones with ``iou >= iou_threshold``.

Per class the first ``max_seg_num`` selections are kept, then all classes are
concatenated (ascending class id), sorted by score (``torch.sort``, descending,
not stable) and cut to ``max_seg_num``.

To stay fast on the pooled candidates of long videos (a million candidates, a
cap of thousands) nothing here scans all candidates per selection:

* only candidates that overlap the selected one change (``iou == 0`` gives a
  weight of exactly 1, and everything left already passed ``min_score`` in the
  first pass), and they are found through an index sorted by start;
* the current maximum comes from a heap keyed by ``(-score, slot)``, so ties
  still go to the lowest slot as in the linear scan; scores only decrease, so
  outdated entries are refreshed when they surface;
* selections come out of each class in non-increasing score, so classes are
  merged lazily and only as many selections are made as the cut keeps.
  The merged result equals the reference's whenever the kept scores and the
  first one cut are all distinct; otherwise (exact float32 ties) every class is
  run to its cap and ``torch.sort`` decides, as in the reference, unless that
  means more than ``_COMPLETE_WORK_LIMIT`` selections (only with caps far above
  the reference's): then tied scores keep class order.
"""
from __future__ import annotations

import heapq

import numpy as np
import torch

from davel.errors import DavelError

_METHODS = {"gaussian": "gaussian", "soft": "gaussian", "hard": "hard"}
_COMPLETE_WORK_LIMIT = 20_000


def _as_numpy(x, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x), dtype=dtype)


def _areas(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    # the 1e-6 keeps zero-length segments from dividing by zero; added in float32
    return (x2 - x1) + np.float32(1e-6)


def _iou(ix1, ix2, iarea, x1: np.ndarray, x2: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """IoU of one segment against many, float32 in the reference's operation order."""
    inter = np.maximum(np.float32(0.0), np.minimum(ix2, x2) - np.maximum(ix1, x1))
    return inter / ((iarea + areas) - inter)


class _StartIndex:
    """Finds the candidates that may overlap a segment (a superset of those with
    ``min(end) > max(start)``), by binary search on the sorted starts."""

    def __init__(self, x1: np.ndarray, x2: np.ndarray):
        self.x2 = x2
        self.order = np.argsort(x1, kind="stable")
        self.sorted_x1 = x1[self.order]
        # longest segment, in float64 so that the lower bound below never cuts too much
        self.reach = float(np.max(x2.astype(np.float64) - x1.astype(np.float64))) if len(x1) else 0.0

    def near(self, ix1: float, ix2: float) -> np.ndarray:
        lo = np.searchsorted(self.sorted_x1, np.float32(np.nextafter(float(ix1) - self.reach, -np.inf)), "left")
        hi = np.searchsorted(self.sorted_x1, ix2, "left")  # overlap needs start < ix2
        near = self.order[lo:hi]
        return near[self.x2[near] > ix1]  # ... and end > ix1


class _SoftNMSClass:
    """Gaussian Soft-NMS of one class, one selection per :meth:`next` call.

    State mirrors the reference's array: ``elem_at[slot]`` / ``slot_of[elem]``,
    slots ``[i, n)`` hold the candidates not yet selected nor dropped.
    """

    def __init__(self, segs: np.ndarray, scores: np.ndarray, sigma: float, min_score: float, cap: int):
        self.x1 = segs[:, 0].copy()
        self.x2 = segs[:, 1].copy()
        self.areas = _areas(self.x1, self.x2)
        self.sc = scores.copy()
        self.sigma = np.float32(sigma)
        self.min_score = np.float32(min_score)
        self.cap = cap
        self.n = len(scores)
        self.i = 0
        self.elem_at = np.arange(self.n)
        self.slot_of = np.arange(self.n)
        self.active = np.ones(self.n, dtype=bool)
        self.index = _StartIndex(self.x1, self.x2)
        self.heap: list[tuple[float, int, int]] = []

    def _push(self, elems: np.ndarray) -> None:
        for s, slot, e in zip((-self.sc[elems]).tolist(), self.slot_of[elems].tolist(), elems.tolist()):
            heapq.heappush(self.heap, (s, slot, e))

    def _pop_max(self) -> int:
        """The candidate with the highest score, lowest slot on ties."""
        while True:
            neg, slot, e = heapq.heappop(self.heap)
            if not self.active[e]:
                continue
            if slot == self.slot_of[e] and neg == -float(self.sc[e]):
                return e
            # outdated (score decayed or slot moved up since it was pushed): requeue
            heapq.heappush(self.heap, (-float(self.sc[e]), int(self.slot_of[e]), e))

    def next(self) -> tuple[int, np.float32] | None:
        """Next selection ``(candidate index, score at selection)``, or None when done."""
        i = self.i
        if i >= self.n or (self.cap > 0 and i >= self.cap):
            return None
        if i == 0:
            e = int(np.argmax(self.sc))  # first maximum, as the linear scan
        else:
            e = self._pop_max()
        # swap the selection into slot i
        m, f = int(self.slot_of[e]), int(self.elem_at[i])
        self.elem_at[m], self.slot_of[f] = f, m
        self.elem_at[i], self.slot_of[e] = e, i
        self.active[e] = False
        score = self.sc[e]

        if i == 0:  # the first pass visits every candidate (also drops low initial scores)
            near = np.flatnonzero(self.active)
        else:
            near = self.index.near(self.x1[e], self.x2[e])
            near = near[self.active[near]]
        ovr = _iou(self.x1[e], self.x2[e], self.areas[e], self.x1[near], self.x2[near], self.areas[near])
        # expf of a float32 argument == exp in float64 rounded to float32
        weight = np.exp((-(ovr * ovr) / self.sigma).astype(np.float64)).astype(np.float32)
        self.sc[near] *= weight
        dropped = near[self.sc[near] < self.min_score]
        if len(dropped):
            self._drop(dropped)
        if i == 0:
            live = np.flatnonzero(self.active)
            self.heap = list(zip((-self.sc[live]).tolist(), self.slot_of[live].tolist(), live.tolist()))
            heapq.heapify(self.heap)
        self.i += 1
        return e, score

    def _drop(self, dropped: np.ndarray) -> None:
        """Remove candidates as the reference does: walking the slots upward, a
        dropped slot receives the current last candidate (itself checked there).

        Net effect: with ``k`` drops the array ends at ``n - k``; the dropped slots
        below that are refilled, in ascending order, by the survivors above it
        taken from the end (descending slot)."""
        self.active[dropped] = False
        new_n = self.n - len(dropped)
        holes = self.slot_of[dropped]
        holes = np.sort(holes[holes < new_n])
        tail = self.elem_at[new_n:self.n][::-1]
        movers = tail[self.active[tail]]
        self.elem_at[holes] = movers
        self.slot_of[movers] = holes
        self.n = new_n
        self._push(movers)  # their slot went down: their heap entries now rank too low


class _HardNMSClass:
    """Greedy NMS of one class, one selection per :meth:`next` call."""

    def __init__(self, segs: np.ndarray, scores: np.ndarray, iou_threshold: float, min_score: float, cap: int):
        valid = np.flatnonzero(scores > np.float32(min_score))
        order = torch.sort(torch.from_numpy(scores[valid]), descending=True).indices.numpy()
        self.elems = valid[order]  # candidate index, by visiting order
        self.scores = scores
        self.x1 = segs[self.elems, 0]
        self.x2 = segs[self.elems, 1]
        self.areas = _areas(self.x1, self.x2)
        self.thr = np.float32(iou_threshold)
        self.keep = np.ones(len(self.elems), dtype=bool)
        self.index = _StartIndex(self.x1, self.x2)
        self.pos = 0
        self.taken = 0
        self.cap = cap

    def next(self) -> tuple[int, np.float32] | None:
        if self.cap > 0 and self.taken >= self.cap:
            return None
        k = self.pos
        while k < len(self.elems) and not self.keep[k]:
            k += 1
        if k >= len(self.elems):
            self.pos = k
            return None
        if self.thr > 0:  # then only overlapping candidates can reach it
            later = self.index.near(self.x1[k], self.x2[k])
            later = later[later > k]
        else:
            later = np.arange(k + 1, len(self.elems))
        ovr = _iou(self.x1[k], self.x2[k], self.areas[k], self.x1[later], self.x2[later], self.areas[later])
        self.keep[later[ovr >= self.thr]] = False
        self.pos = k + 1
        self.taken += 1
        e = int(self.elems[k])
        return e, self.scores[e]


def _run_out(selector, picked: list) -> None:
    while (item := selector.next()) is not None:
        picked.append(item)


def _seg_voting(nms_segs: np.ndarray, all_segs: np.ndarray, all_scores: np.ndarray,
                iou_threshold: float) -> np.ndarray:
    """Replace each kept segment by the score-weighted mean of the inputs overlapping it
    by ``iou >= iou_threshold`` (class-agnostic mode only)."""
    a = torch.from_numpy(nms_segs)[:, None, :]
    b = torch.from_numpy(all_segs)[None, :, :]
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    iou = inter / ((a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter)
    w = (iou >= iou_threshold).to(torch.float32) * torch.from_numpy(all_scores)[None, :]
    w /= w.sum(dim=1, keepdim=True)
    return (w @ torch.from_numpy(all_segs)).numpy()


def _sort_and_cut(segs, scores, labels, max_seg_num):
    order = torch.sort(torch.from_numpy(scores), descending=True).indices.numpy()[:max_seg_num]
    return segs[order], scores[order], labels[order]


def _merge_classes(selectors: list, members: list[np.ndarray],
                   max_seg_num: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class selections -> (candidate indices, scores) of the final cut.

    ``selectors`` are in ascending class id, ``members[c]`` maps class ``c``'s
    local indices to input indices; see the module doc for when the lazy merge
    equals the reference's full concatenation + ``torch.sort``."""
    picked: list[list] = [[] for _ in selectors]
    heap = []
    for c, sel in enumerate(selectors):
        if (item := sel.next()) is not None:
            picked[c].append(item)
            heap.append((-float(item[1]), c, 0))
    heapq.heapify(heap)
    merged = []  # (class, position in that class's selections), by descending score
    while heap and len(merged) <= max_seg_num:  # one more than kept, to see the cut
        _, c, k = heapq.heappop(heap)
        merged.append((c, k))
        if (item := selectors[c].next()) is not None:
            picked[c].append(item)
            heapq.heappush(heap, (-float(item[1]), c, k + 1))
    merged_scores = np.array([picked[c][k][1] for c, k in merged], dtype=np.float32)
    distinct = bool(np.all(np.diff(merged_scores) < 0))
    work = sum(min(sel.cap, len(sel.x1)) for sel in selectors)
    if distinct or work > _COMPLETE_WORK_LIMIT:
        keep = merged[:max_seg_num]
        return (np.array([members[c][picked[c][k][0]] for c, k in keep], dtype=np.int64),
                merged_scores[:max_seg_num])
    for c, sel in enumerate(selectors):
        _run_out(sel, picked[c])
    inds = np.array([members[c][e] for c, p in enumerate(picked) for e, _ in p], dtype=np.int64)
    scores = np.array([s for p in picked for _, s in p], dtype=np.float32)
    order = torch.sort(torch.from_numpy(scores), descending=True).indices.numpy()[:max_seg_num]
    return inds[order], scores[order]


def soft_nms_1d(
    segments,
    scores,
    labels,
    sigma: float = 0.4,
    min_score: float = 0.001,
    max_seg_num: int = 100,
    method: str = "gaussian",
    iou_threshold: float = 0.7,
    multiclass: bool = True,
    voting_thresh: float = 0.75,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched 1-D NMS as UnAV/CCNet run it at test time.

    Args:
        segments: ``[N, 2]`` (start, end), finite, ``end >= start``; any unit
            (the models use grid units).
        scores: ``[N]`` finite confidences.
        labels: ``[N]`` integer class ids.
        sigma: Gaussian decay ``exp(-iou**2 / sigma)`` (Soft-NMS only).
        min_score: Soft-NMS drops candidates decayed below it; hard NMS keeps ``> min_score``.
        max_seg_num: kept per class, then overall (``>= 1``).
        method: ``"gaussian"`` (alias ``"soft"``) or ``"hard"``.
        iou_threshold: suppression threshold of hard NMS (unused by Gaussian Soft-NMS).
        multiclass: NMS per class (True) or over all candidates at once.
        voting_thresh: class-agnostic mode only: boundary voting over inputs with
            ``iou >= voting_thresh`` (``<= 0`` disables it).

    Returns:
        ``(segments [K, 2] float32, scores [K] float32, labels [K] int64)``,
        descending score, ``K <= max_seg_num``.
    """
    if method not in _METHODS:
        raise DavelError(f"unknown NMS method {method!r}; expected one of {sorted(_METHODS)}")
    max_seg_num = int(max_seg_num)
    if max_seg_num < 1:
        raise DavelError(f"max_seg_num must be >= 1, got {max_seg_num}")
    segs = _as_numpy(segments, np.float32)
    sc = _as_numpy(scores, np.float32)
    lab = _as_numpy(labels, np.int64)
    if segs.ndim != 2 or segs.shape[1] != 2 or sc.shape != (len(segs),) or lab.shape != (len(segs),):
        raise DavelError(
            f"NMS expects segments [N, 2], scores [N], labels [N]; got "
            f"{list(segs.shape)}, {list(sc.shape)}, {list(lab.shape)}")
    if not (np.isfinite(segs).all() and np.isfinite(sc).all()):
        raise DavelError("NMS input contains NaN or infinite values")
    if (segs[:, 1] < segs[:, 0]).any():
        raise DavelError("NMS input has segments that end before they start")
    if len(segs) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)

    def selector(idx: np.ndarray):
        if _METHODS[method] == "gaussian":
            return _SoftNMSClass(segs[idx], sc[idx], sigma, min_score, max_seg_num)
        return _HardNMSClass(segs[idx], sc[idx], iou_threshold, min_score, max_seg_num)

    if multiclass:
        groups = [np.flatnonzero(lab == c) for c in np.unique(lab)]
        selectors = [selector(g) for g in groups]
        keep, new_scores = _merge_classes(selectors, groups, max_seg_num)
        return segs[keep], new_scores, lab[keep]

    sel = selector(np.arange(len(segs)))
    picked: list = []
    _run_out(sel, picked)
    keep = np.array([e for e, _ in picked], dtype=np.int64)
    new_scores = np.array([s for _, s in picked], dtype=np.float32)
    new_segs = segs[keep]
    if voting_thresh > 0 and len(keep):
        new_segs = _seg_voting(new_segs, segs, sc, voting_thresh)
    return _sort_and_cut(new_segs, new_scores, lab[keep], max_seg_num)
