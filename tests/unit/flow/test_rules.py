"""Approval rules: parsed without eval, each clause reported, missing metrics named."""

from __future__ import annotations

import pytest

from modelfab.core.errors import ConfigError
from modelfab.flow.steps.gates import check_rule, parse_rule
from modelfab.flow.steps.model_steps import StepFailed


def test_parse_rule() -> None:
    assert parse_rule("metrics.test.auroc >= 0.9 and metrics.test.ece<0.1") == [
        ("metrics.test.auroc", ">=", 0.9), ("metrics.test.ece", "<", 0.1)
    ]
    for bad in ("metrics.test.auroc >= high", "__import__('os') > 1", "auroc => 0.9", ""):
        with pytest.raises(ConfigError, match="rule"):
            parse_rule(bad)


def test_check_rule_reports_each_clause() -> None:
    ctx = {"metrics": {"test": {"auroc": 0.91, "ece": 0.2}}}
    ok, lines = check_rule("metrics.test.auroc >= 0.9 and metrics.test.ece < 0.1", ctx)
    assert not ok and lines == ["metrics.test.auroc = 0.9100 >= 0.9: pass", "metrics.test.ece = 0.2000 < 0.1: FAIL"]
    assert check_rule("metrics.test.auroc > 0.5", ctx)[0]
    with pytest.raises(StepFailed, match=r"metrics.val.auroc is not available \(have: metrics.test.auroc"):
        check_rule("metrics.val.auroc >= 0.5", ctx)
