"""The ``distill`` extractor: a smaller student L2 trained against a teacher L2's outputs.

The student is a registered L0/L1 base (e.g. Lite0 for a Lite2 teacher, MiniLM for a text
teacher), fine-tuned (``full``, ``partial`` or ``lora``) on the teacher's training data with the
temperature-scaled logit loss (Hinton et al.) plus, optionally, a feature loss matching the teacher's
embedding through a learned projection. It is stored like any tuned L2 of its base (so it loads,
exports, quantizes and serves like one); the teacher, the loss and the teacher's validation metric
are recorded in its config, card and compression record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from modelfab.compress.data import metric_name
from modelfab.compress.extract import EXTRACTORS, ExtractResult
from modelfab.compress.parity import compression_record
from modelfab.core.errors import ConfigError
from modelfab.store.datasets import ItemRow
from modelfab.store.schema import Model
from modelfab.store.store import Store
from modelfab.tune.train import Distillation


class DistillConfig(BaseModel):
    """Options of ``modelfab extract MODEL --method distill``."""

    model_config = ConfigDict(extra="forbid")
    student: str
    """A registered L0/L1 base of the teacher's modality (e.g. efficientnet-lite0)."""
    method: Literal["full", "partial", "lora"] = "full"
    """How the student's backbone is trained."""
    data: str | None = None
    """DATASET@version with the teacher's label view (default: the teacher's training dataset)."""
    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.7, ge=0, le=1)
    """Weight of the soft-target loss (1 - alpha on the hard labels)."""
    feature_weight: float = Field(default=0.0, ge=0)
    """>0: also match the teacher's embedding (MSE through a learned projection)."""
    epochs: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=16, ge=1)
    image_size: int | None = Field(default=None, ge=32, le=1024)
    """Student input side (default the student base's)."""
    seed: int = 0
    max_seconds: float | None = Field(default=None, gt=0)
    name: str | None = None
    """Child name (default <teacher>-distilled)."""
    max_metric_drop: float = Field(default=0.05, ge=0)
    """The compression record passes when the student's val metric is within this of the teacher's."""


def _teacher_targets(store: Store, teacher: Any, modality: str,
                     cfg: DistillConfig) -> Callable[[list[ItemRow]], Distillation]:
    """rows -> Distillation: the teacher's probabilities (and embeddings) on the student's training rows."""
    from modelfab.tune.data import item_inputs

    def targets(rows: list[ItemRow]) -> Distillation:
        probs = teacher.predict_rows(store, rows, modality)  # (N, C)
        features = None
        if cfg.feature_weight > 0:
            inputs = item_inputs(store, rows, modality)
            with torch.inference_mode():
                feats = [teacher.net._embed(teacher.backbone.preprocess(list(inputs[i : i + 32])))
                         for i in range(0, len(inputs), 32)]
            z = torch.cat(feats)  # (N, D_t), standardised so the loss scale does not depend on the teacher
            features = (z - z.mean(0)) / z.std(0, unbiased=False).clamp_min(1e-6)
        return Distillation(probs=probs.float(), temperature=cfg.temperature, alpha=cfg.alpha,
                            features=features, feature_weight=cfg.feature_weight)

    return targets


@EXTRACTORS.register("distill", config=DistillConfig, summary="teacher L2 -> smaller student base (KD loss)")
def extract_distill(store: Store, model: Model, cfg: DistillConfig) -> ExtractResult:
    """Train and register a student L2 distilled from teacher ``model``."""
    from modelfab.compress.runtimes import model_format
    from modelfab.tune import TuneConfig
    from modelfab.tune.api import load_base, register_l2, train_l2
    from modelfab.tune.load import load_scenario

    fmt, _ = model_format(store, model)
    if fmt != "scenario":
        raise ConfigError(f"distill: the teacher {model.name}:{model.version} is a {fmt} model; use a tuned L2")
    teacher = load_scenario(store, model.id)
    student_base, _ = load_base(store, cfg.student)
    t_mod, s_mod = teacher.backbone.input_spec.modality, student_base.input_spec.modality
    if t_mod != s_mod:
        raise ConfigError(f"distill: teacher/student task mismatch: the teacher is a {t_mod} model, "
                          f"the student base {cfg.student} is {s_mod}")
    data = cfg.data
    if data is None:
        dv = store.get_dataset_version(int(model.dataset_version_id or 0))
        data = f"{dv.dataset.name}@{dv.version}"
    tcfg = TuneConfig(task=teacher.config.task, labels=teacher.config.labels, method=cfg.method, seed=cfg.seed,
                      epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, image_size=cfg.image_size,
                      target_recall=teacher.config.target_recall, max_seconds=cfg.max_seconds,
                      patience=max(3, cfg.epochs // 2))
    modality = "text" if t_mod == "text" else "image"
    trained = train_l2(store, base=cfg.student, data=data, cfg=tcfg,
                       teacher=_teacher_targets(store, teacher, modality, cfg))
    if trained.data.classes != teacher.classes:
        raise ConfigError(f"distill: teacher/student task mismatch: {data} gives classes {trained.data.classes}, "
                          f"the teacher has {teacher.classes}")
    metric = metric_name(teacher.config.task or "")
    teacher_val = (model.metrics or {}).get("val", {})
    t_value = float(teacher_val.get(metric, teacher_val.get("accuracy", float("nan"))))
    s_value = float(trained.val_metrics.get(metric, trained.val_metrics.get("accuracy", float("nan"))))
    record = compression_record(metric, s_value, t_value, f"{data}:val", max_drop=cfg.max_metric_drop,
                                extra={"method": "distill", "teacher": model.id, "student_base": cfg.student})
    trained.card["distillation"] = {"teacher": model.id, **cfg.model_dump()}
    child, size = register_l2(store, trained, cfg.name or f"{model.name}-distilled")
    with store.transaction() as s:  # the record and the teacher link, on the freshly registered row
        row = s.get(Model, child.id)
        assert row is not None
        row.metrics = {**(row.metrics or {}), "parity": record}
        row.config = {**(row.config or {}), "extract": {"method": "distill", "teacher": model.id, **cfg.model_dump()}}
    child = store.get_model(child.id)
    details = {"teacher_val": t_value, "student_val": s_value, "epochs": trained.outcome.epochs,
               "seconds": trained.outcome.seconds, "params": trained.params, "teacher_params": model.params}
    return ExtractResult(child, record, size, details)
