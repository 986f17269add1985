"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on the last layer's gradient embeddings.

For a softmax head with probabilities p (C,) on an embedding x (D,), the loss gradient with the
predicted class as label is g = (p - onehot(argmax p)) (x) x, a C*D vector whose norm grows with
the model's uncertainty.  k-means++ seeding on g picks items that are uncertain *and* spread out,
with no candidate-pool size to tune.  Distances are computed from the factors, never from the
C*D vectors: |g_i - g_j|^2 = |a_i|^2 |x_i|^2 + |a_j|^2 |x_j|^2 - 2 (a_i . a_j)(x_i . x_j).
"""

from __future__ import annotations

import numpy as np


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """(N, C) probabilities -> (N, C) a = p - onehot(argmax p)."""
    a = np.array(probs, dtype=np.float64)
    a[np.arange(len(a)), a.argmax(axis=1)] -= 1.0
    return a


def kmeans_pp(x: np.ndarray, a: np.ndarray, budget: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding on gradient embeddings a (x) x of (N, D) ``x`` and (N, C) ``a``.

    The first pick is the largest gradient; each next one is drawn with probability proportional
    to the squared distance to the nearest pick (seeded). Returns (indices (budget,), that distance).
    """
    x = x.astype(np.float64)
    xx = np.einsum("nd,nd->n", x, x)  # (N,)
    aa = np.einsum("nc,nc->n", a, a)  # (N,)
    norm2 = aa * xx  # (N,) |g|^2
    rng = np.random.default_rng(seed)
    picks = np.empty(budget, dtype=np.int64)
    dist = np.empty(budget, dtype=np.float64)
    nearest = np.full(len(x), np.inf)
    taken = np.zeros(len(x), dtype=bool)
    for k in range(budget):
        if k == 0:
            i = int(np.argmax(norm2))
            dist[k] = float(np.sqrt(norm2[i]))
        else:
            weight = np.where(taken, 0.0, nearest)
            total = weight.sum()
            # when every remaining item coincides with a pick, take them in order
            i = int(rng.choice(len(x), p=weight / total)) if total > 0 else int(np.flatnonzero(~taken)[0])
            dist[k] = float(np.sqrt(nearest[i]))
        picks[k] = i
        taken[i] = True
        d2 = norm2 + norm2[i] - 2.0 * (a @ a[i]) * (x @ x[i])  # (N,)
        nearest = np.minimum(nearest, np.maximum(d2, 0.0))
    return picks, dist
