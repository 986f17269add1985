"""Greedy coreset sub-sampling and a memory-bounded bank of normal patch features.

``greedy_coreset`` is k-center greedy (PatchCore): start from a seeded random point and keep adding
the point farthest from everything chosen so far, so the kept set covers the feature space with
the smallest radius a greedy choice finds.  Distances are computed on a seeded random projection
(at most ``proj_dim`` dims) for speed.  :class:`PatchBank` streams patches through that selection
in chunks so the patches held in memory (bank + pending chunk) never exceed the byte budget,
however many images are fitted.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from modelfab.core.errors import DataError

BYTES_PER_VALUE = 4  # float32


def greedy_coreset(x: Tensor, keep: int, *, seed: int = 0, proj_dim: int = 64) -> Tensor:
    """Indices (keep,) of a k-center greedy coreset of ``x`` (M, D)."""
    m = len(x)
    if keep >= m:
        return torch.arange(m)
    if keep <= 0:
        return torch.zeros(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    z = x.float()
    if z.shape[1] > proj_dim:
        z = z @ (torch.randn(z.shape[1], proj_dim, generator=gen) / math.sqrt(proj_dim))  # (M, P)
    sq = (z * z).sum(1)  # (M,)
    first = int(torch.randint(m, (1,), generator=gen))
    chosen = torch.empty(keep, dtype=torch.long)
    chosen[0] = first
    min_d = torch.full((m,), math.inf)
    last = first
    for i in range(1, keep):
        d = sq - 2.0 * (z @ z[last]) + sq[last]  # (M,) squared distance to the newest centre
        torch.minimum(min_d, d, out=min_d)
        last = int(torch.argmax(min_d))
        chosen[i] = last
    return chosen


def covering_radius(x: Tensor, centres: Tensor) -> float:
    """Largest distance from a row of ``x`` to its nearest row of ``centres``."""
    d = torch.cdist(x.float(), centres.float())  # (M, K)
    return float(d.min(dim=1).values.max())


class PatchBank:
    """Streams patch features into a coreset-reduced bank within ``max_bytes``.

    Patches are buffered in chunks of ``chunk`` rows; a full chunk is reduced to ``ratio`` of its
    rows by greedy coreset and appended to the bank; when the bank would exceed its capacity it is
    itself reduced to half its capacity by greedy coreset (halving keeps these re-reductions rare).
    ``peak_bytes`` records the most patch bytes held (bank + pending chunk; the transient copy
    made while re-reducing a full bank is not counted).
    """

    def __init__(self, dim: int, max_bytes: int, ratio: float, chunk: int, patches_per_image: int, seed: int) -> None:
        rows = max_bytes // (BYTES_PER_VALUE * dim)
        self.chunk = max(1, min(chunk, rows // 4))
        self.capacity = rows - self.chunk
        if self.capacity < patches_per_image:
            need = (patches_per_image * 5 // 4 + 1) * BYTES_PER_VALUE * dim / 2**20
            raise DataError(
                f"max_memory_mb: {max_bytes / 2**20:.3g} MB holds {max(rows, 0)} patches of {dim} dims, "
                f"less than one image's {patches_per_image} patches; use at least {need:.2f} MB"
            )
        self.dim = dim
        self.ratio = ratio
        self.seed = seed
        self.parts: list[Tensor] = []
        self.bank_rows = 0
        self.pending: list[Tensor] = []
        self.pending_rows = 0
        self.peak_bytes = 0
        self.seen = 0
        self._round = 0

    def _note(self) -> None:
        self.peak_bytes = max(self.peak_bytes, (self.bank_rows + self.pending_rows) * self.dim * BYTES_PER_VALUE)

    def add(self, patches: Tensor) -> None:
        """Add (M, D) patches (any M; split into chunks)."""
        for start in range(0, len(patches), self.chunk):
            part = patches[start : start + self.chunk].float()
            room = self.chunk - self.pending_rows
            head, tail = part[:room], part[room:]
            self.pending.append(head.clone())
            self.pending_rows += len(head)
            self.seen += len(head)
            self._note()
            if self.pending_rows >= self.chunk:
                self._flush()
            if len(tail):
                self.pending.append(tail.clone())
                self.pending_rows += len(tail)
                self.seen += len(tail)
                self._note()

    def _flush(self) -> None:
        if not self.pending:
            return
        block = torch.cat(self.pending)
        self.pending, self.pending_rows = [], 0
        self._round += 1
        keep = max(1, math.ceil(self.ratio * len(block)))
        block = block[greedy_coreset(block, keep, seed=self.seed + self._round)]
        if self.bank_rows + len(block) > self.capacity:  # full: reduce to half, so this stays rare
            merged = torch.cat([*self.parts, block])
            self.parts = [merged[greedy_coreset(merged, self.capacity // 2, seed=self.seed + self._round)]]
        else:
            self.parts.append(block)
        self.bank_rows = sum(len(p) for p in self.parts)
        self._note()

    def finish(self) -> Tensor:
        """The bank (K, D) after reducing the last partial chunk."""
        self._flush()
        if not self.parts:
            raise DataError("no normal patches were fitted")
        return torch.cat(self.parts)
