"""The ``screen`` step: fit a scorer on normal images, calibrate, keep only what needs human eyes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from modelfab.flow.steps.base import Step, StepContext, StepParams, register


class ScreenParams(StepParams):
    backbone: str
    data: str
    normal: str
    calibration: str
    scorer: str = "knn-memory"
    config: dict[str, Any] = Field(default_factory=dict)
    target_recall: float = Field(default=0.95, gt=0, le=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    task: str | None = None
    name: str | None = None


@register("screen")
class ScreenStep(Step):
    """Fit an anomaly scorer on the normal items of ``normal`` (train split), calibrate on ``calibration``
    for the target defect recall, and write the version of ``data`` that still needs labeling."""

    Params = ScreenParams
    kinds: ClassVar[dict[str, str]] = {
        "backbone": "model", "data": "dataset", "normal": "dataset", "calibration": "dataset",
    }
    outputs: ClassVar[dict[str, str]] = {
        "dataset": "dataset", "model": "model", "filtered_fraction": "number", "threshold": "number",
    }
    summary = "screen raw data: fit a scorer, calibrate for a defect recall, keep what needs labeling"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, ScreenParams)
        from modelfab.screen.api import fit_screen, run_screen

        fit = fit_screen(ctx.store, backbone=params.backbone, normal=params.normal, scorer=params.scorer,
                         config=params.config, name=params.name, task=params.task)
        res = run_screen(ctx.store, model=fit.model.id, data=params.data, calibration=params.calibration,
                         target_recall=params.target_recall, confidence=params.confidence,
                         task=params.task)
        cal = res.calibration
        ctx.log(f"{len(res.ranked)} of {res.screened} items need labeling; {res.filtered_fraction:.1%} filtered "
                f"at threshold {cal.threshold:.4g} (recall >= {cal.target_recall:g}, bound {cal.recall_bound:.4f})")
        if res.version_ref is None:
            from modelfab.core.errors import DataError

            raise DataError(f"screen: every item of {params.data} was filtered as normal; nothing to label")
        return {"dataset": res.version_ref, "model": fit.model.id,
                "filtered_fraction": res.filtered_fraction, "threshold": float(cal.threshold)}
