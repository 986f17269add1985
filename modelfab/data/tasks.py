"""Tasks as label views: a rule that turns a version's label field into class labels."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelfab.core.errors import ConfigError, NotFoundError
from modelfab.store.datasets import ItemRow


class ValueClass(BaseModel):
    """Map one exact label value to a class name."""

    value: Any
    name: str


class TaskView(BaseModel):
    """How to read a task's classes from a label field.

    ``rule``: ``value`` uses the field as the class; ``threshold`` gives ``classes[1]`` when the
    value is >= ``threshold`` else ``classes[0]``; ``map`` keeps only the listed values.
    """

    type: Literal["classification", "binary"] = "classification"
    field: str = "label"
    rule: Literal["value", "threshold", "map"] = "value"
    classes: list[str] = Field(default_factory=list)
    threshold: float | None = None
    mapping: list[ValueClass] = Field(default_factory=list)
    positive: str | None = None
    description: str = ""

    def label_of(self, value: Any) -> str | None:
        """The class of ``value`` under this view, or None when the item is left out."""
        if value is None:
            return None
        if self.rule == "value":
            return str(value)
        if self.rule == "threshold":
            if self.threshold is None or len(self.classes) != 2:
                raise ConfigError("threshold task needs `threshold` and exactly two classes")
            return self.classes[1] if float(value) >= self.threshold else self.classes[0]
        for vc in self.mapping:
            if vc.value == value or (
                isinstance(value, int | float)
                and isinstance(vc.value, int | float)
                and abs(float(value) - float(vc.value)) < 1e-9
            ):
                return vc.name
        return None


def get_task(tasks: Mapping[str, Any], name: str) -> TaskView:
    if name not in tasks:
        raise NotFoundError(f"unknown task {name!r}; known: {', '.join(sorted(tasks)) or '(none)'}")
    return TaskView.model_validate(tasks[name])


def task_labels(rows: Iterable[ItemRow], view: TaskView, *, ground_truth: bool = False) -> dict[str, str]:
    """key -> class for every item the view keeps. ``ground_truth`` reads hidden labels
    (only oracles and benchmarks may ask for it)."""
    out: dict[str, str] = {}
    for r in rows:
        source = r.hidden if ground_truth and view.field in r.hidden else r.labels
        cls = view.label_of(source.get(view.field))
        if cls is not None:
            out[r.key] = cls
    return out


def distribution(labels: Mapping[str, str]) -> dict[str, int]:
    return dict(sorted(Counter(labels.values()).items()))
