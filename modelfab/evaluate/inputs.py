"""Validation of evaluation inputs: labels, probabilities, class names, positive class, thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelfab.core.errors import ConfigError, DataError

#: Largest accepted ``|sum(row) - 1|`` of a probability row (float16 softmax outputs drift ~1e-3).
SUM_TOLERANCE = 2e-3


@dataclass(frozen=True)
class Inputs:
    """Validated inputs: ``y`` (N,) int64 in [0, C), ``probs`` (N, C) float64, names, positive index."""

    y: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    positive: int | None  # set for binary tasks only

    @property
    def is_binary(self) -> bool:
        """Two classes."""
        return len(self.class_names) == 2

    @property
    def scores(self) -> np.ndarray:
        """Positive-class scores (N,) of a binary task."""
        if self.positive is None:
            raise ConfigError("scores are only defined for binary tasks")
        return self.probs[:, self.positive]


def validate_inputs(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    positive: str | int | None = None,
) -> Inputs:
    """Check and normalise inputs, raising :class:`DataError` / :class:`ConfigError` with the reason.

    ``probs`` is (N, C); for a binary task a 1-D (N,) array is read as the probability of class 1.
    Rows must be finite, within [0, 1] and sum to 1 within :data:`SUM_TOLERANCE` (pass softmax
    outputs, not logits). ``positive`` (binary only) is a class name or index; default: index 1.
    """
    names = tuple(str(n) for n in class_names)
    if len(names) < 2:
        raise ConfigError(f"class_names needs at least 2 classes, got {len(names)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"class_names has duplicates: {list(names)}")
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1 and len(names) == 2:
        p = np.stack([1.0 - p, p], axis=1)
    if y.ndim != 1:
        raise DataError(f"y_true must be 1-D (N,), got shape {y.shape}")
    if p.ndim != 2:
        raise DataError(f"probs must be 2-D (N, C), got shape {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise DataError(f"y_true has {y.shape[0]} samples but probs has {p.shape[0]} rows")
    if p.shape[1] != len(names):
        raise DataError(f"probs has {p.shape[1]} columns but there are {len(names)} class names")
    if y.size == 0:
        raise DataError("no samples to evaluate")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    if y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"y_true must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= len(names))
    if bad.any():
        raise DataError(f"y_true has {int(bad.sum())} label(s) outside [0, {len(names)}): e.g. {int(y[bad][0])}")
    nonfinite = ~np.isfinite(p)
    if nonfinite.any():
        rows = np.nonzero(nonfinite.any(axis=1))[0]
        raise DataError(f"probs contain NaN/inf in {rows.size} row(s), first at row {int(rows[0])}")
    if (p < 0).any() or (p > 1).any():
        raise DataError("probs must lie in [0, 1] (pass softmax probabilities, not logits)")
    err = np.abs(p.sum(axis=1) - 1.0)
    if (err > SUM_TOLERANCE).any():
        row = int(np.argmax(err))
        raise DataError(
            f"probs rows must sum to 1 (tolerance {SUM_TOLERANCE}); row {row} sums to {p[row].sum():.6f}"
        )
    return Inputs(y=y, probs=p, class_names=names, positive=_positive_index(names, positive))


def _positive_index(names: tuple[str, ...], positive: str | int | None) -> int | None:
    if len(names) != 2:
        if positive is not None:
            raise ConfigError(f"positive is only valid for binary tasks; this one has {len(names)} classes")
        return None
    if positive is None:
        return 1
    if isinstance(positive, str):
        if positive not in names:
            raise ConfigError(f"positive class {positive!r} is not one of {list(names)}")
        return names.index(positive)
    if isinstance(positive, int | np.integer) and 0 <= int(positive) < 2:
        return int(positive)
    raise ConfigError(f"positive must be a class name or 0/1, got {positive!r}")


def check_threshold(name: str, value: float | None, binary: bool) -> None:
    """A decision threshold is in [0, 1] or ``+inf`` (predict nothing positive); binary tasks only."""
    if value is None:
        return
    if not binary:
        raise ConfigError(f"{name} is only valid for binary tasks")
    v = float(value)
    if not (0.0 <= v <= 1.0 or v == float("inf")):
        raise ConfigError(f"{name} must be in [0, 1] or +inf, got {value}")
