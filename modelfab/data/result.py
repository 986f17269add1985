"""What an import or a version-deriving operation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from modelfab.store.schema import DatasetVersion


@dataclass
class ImportResult:
    dataset: str
    version: DatasetVersion
    created: bool
    items: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.version.version}"
