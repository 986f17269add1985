"""k-center greedy (core-set) selection on embeddings, in bounded memory."""

from __future__ import annotations

import numpy as np

CHUNK = 4096  # rows of the labeled set per distance block: memory ~ CHUNK * N floats


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


def distances_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    """(N,) euclidean distances from each row of ``x`` (N, D) to one ``center`` (D,)."""
    diff = x - center[None, :]
    return np.sqrt(np.einsum("nd,nd->n", diff, diff))


def min_distances(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(N,) distance from each row of ``x`` (N, D) to its nearest row of ``centers`` (M, D)."""
    out = np.full(len(x), np.inf, dtype=np.float64)
    sq = np.einsum("nd,nd->n", x, x).astype(np.float64)  # (N,)
    for start in range(0, len(centers), CHUNK):
        c = centers[start : start + CHUNK].astype(np.float64)  # (m, D)
        d2 = sq[:, None] + np.einsum("md,md->m", c, c)[None, :] - 2.0 * (x.astype(np.float64) @ c.T)  # (N, m)
        out = np.minimum(out, np.sqrt(np.maximum(d2.min(axis=1), 0.0)))
    return out


def k_center_greedy(
    x: np.ndarray, labeled: np.ndarray | None, budget: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``budget`` rows of ``x`` (N, D), each the farthest from everything labeled or picked so far.

    With no labeled rows the first pick is a seeded random row (its distance is reported as NaN).
    Returns (indices (budget,), distance of each pick to its nearest earlier center (budget,)).
    Cost: O(N * (M + budget) * D) time, O(N) memory beyond the distance blocks.
    """
    n = len(x)
    nearest = min_distances(x, labeled) if labeled is not None and len(labeled) else np.full(n, np.inf)
    picks = np.empty(budget, dtype=np.int64)
    dist = np.empty(budget, dtype=np.float64)
    taken = np.zeros(n, dtype=bool)
    for k in range(budget):
        if np.isinf(nearest).all():
            i = int(np.random.default_rng(seed).integers(n))
            dist[k] = np.nan
        else:
            masked = np.where(taken, -1.0, nearest)
            i = int(np.argmax(masked))
            dist[k] = masked[i]
        picks[k] = i
        taken[i] = True
        nearest = np.minimum(nearest, distances_to(x, x[i]))
    return picks, dist
