"""Parity verdicts at their boundaries (pure functions on arrays)."""

from __future__ import annotations

import numpy as np

from modelfab.compress.parity import export_parity, task_parity


def test_export_parity_boundaries() -> None:
    ref = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    assert export_parity(ref, ref + np.array([[1e-4, -1e-4], [0, 0]], np.float32), 1.1e-4, "d")["status"] == "passed"
    over = export_parity(ref, ref + np.array([[2e-4, -2e-4], [0, 0]]), 1e-4, "d")
    assert over["status"] == "failed" and "max |Δp| 0.0002 > tolerance 0.0001" in over["reason"]
    flipped = export_parity(ref, ref[:, ::-1], 1.0, "d")
    assert flipped["status"] == "failed" and "top-1 agreement 0.0000 < 1" in flipped["reason"]
    nan = export_parity(ref, np.full_like(ref, np.nan), 1.0, "d")
    assert nan["status"] == "failed"


def test_task_parity_boundaries() -> None:
    ref = np.zeros(100, int)
    one_off = ref.copy()
    one_off[0] = 1
    ok = task_parity(ref, one_off, "auroc", 0.90, 0.895, "d")
    assert ok["status"] == "passed" and ok["label_agreement"] == 0.99
    two_off = one_off.copy()
    two_off[1] = 1
    low = task_parity(ref, two_off, "auroc", 0.90, 0.90, "d")
    assert low["status"] == "failed" and "label agreement 0.9800 < 0.99" in low["reason"]
    drop = task_parity(ref, ref, "auroc", 0.90, 0.894, "d")
    assert drop["status"] == "failed" and "auroc 0.8940 vs fp32 0.9000" in drop["reason"]
    gain = task_parity(ref, ref, "accuracy", 0.90, 0.91, "d")
    assert gain["status"] == "failed"  # a large change either way means the model is not the same
