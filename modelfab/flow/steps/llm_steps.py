"""Language-model steps: prompt templates -> SFT data, ranking candidates and pairs, SFT, DPO,
a knowledge index, QA evaluation and the general-set regression check.

Each wraps the library function the matching ``modelfab llm`` command calls; files named in the
parameters (templates, tables, document folders, QA sets) are part of the cache key through their
fingerprints, so editing one re-runs the step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from modelfab.core.errors import ConfigError
from modelfab.flow.steps.base import Step, StepContext, StepParams, register


def _content_fingerprint(path: str | Path) -> str:
    """sha256 over the names and contents of a file or of every file under a folder."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"path: {p} does not exist")
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(f"{f.relative_to(p) if f != p else f.name}\0".encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _fields_of(model: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    unknown = sorted(set(values) - set(model.model_fields))  # type: ignore[attr-defined]
    if unknown:
        raise ValueError(f"unknown {what} field(s) {', '.join(unknown)}")
    return values


class TemplateParams(StepParams):
    template: str
    model: str
    name: str = Field(min_length=1)
    rows: str | None = None
    docs: str | None = None
    max_tokens: int | None = Field(default=None, ge=8)
    skip_invalid: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _source(self) -> TemplateParams:
        if (self.rows is None) == (self.docs is None):
            raise ValueError("give exactly one of rows (a CSV/JSONL table) or docs (a folder of documents)")
        return self


@register("prompt-template")
class PromptTemplateStep(Step):
    """Render a Jinja2 prompt template over a table or documents into an SFT (chat) dataset version."""

    Params = TemplateParams
    kinds: ClassVar[dict[str, str]] = {"model": "model"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "items": "number", "skipped": "number"}
    summary = "render a prompt template over a table or documents into an SFT dataset (validated)"

    def fingerprint(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, TemplateParams)
        source = params.rows or params.docs
        return {"template": _content_fingerprint(params.template), "source": _content_fingerprint(str(source))}

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, TemplateParams)
        from modelfab.llm.templates import render_dataset

        result, validation = render_dataset(
            ctx.store, Path(params.template), model=params.model, name=params.name,
            rows=Path(params.rows) if params.rows else None, docs=Path(params.docs) if params.docs else None,
            max_tokens=params.max_tokens, skip_invalid=params.skip_invalid, seed=params.seed)
        skipped = len(validation.problems)
        ctx.log(f"{result.ref}: {result.items} samples ({validation.summary()})")
        return {"dataset": result.ref, "items": result.items, "skipped": skipped}


class CandidatesParams(StepParams):
    model: str
    prompts: str
    name: str = Field(min_length=1)
    n: int = Field(default=4, ge=2, le=16)
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.8, ge=0)
    seed: int = 0


@register("rank-candidates")
class RankCandidatesStep(Step):
    """Generate N candidate answers per prompt with a registered model: a ranking dataset to annotate."""

    Params = CandidatesParams
    kinds: ClassVar[dict[str, str]] = {"model": "model", "prompts": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "items": "number"}
    summary = "sample N candidate responses per prompt (a ranking dataset for annotators)"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, CandidatesParams)
        from modelfab.llm.ranking import candidates

        res = candidates(ctx.store, params.model, params.prompts, params.n, params.name,
                         max_new_tokens=params.max_new_tokens, temperature=params.temperature, seed=params.seed)
        ctx.log(f"{res.ref}: {res.items} prompts x {params.n} candidates")
        return {"dataset": res.ref, "items": res.items}


class RankSyntheticParams(StepParams):
    data: str
    rule: str = "reference-f1"


@register("rank-synthetic")
class RankSyntheticStep(Step):
    """Rank candidates by a rule (e.g. closeness to the reference answer); marked synthetic in the data."""

    Params = RankSyntheticParams
    kinds: ClassVar[dict[str, str]] = {"data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset"}
    summary = "rule-based rankings (marked synthetic, never mixed with human rankings)"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, RankSyntheticParams)
        from modelfab.llm.ranking import synthetic_rankings

        res = synthetic_rankings(ctx.store, params.data, params.rule)
        return {"dataset": res.ref}


class RankPairsParams(StepParams):
    data: str
    name: str = Field(min_length=1)
    include_synthetic: bool = False
    all_pairs: bool = False
    seed: int = 0


@register("rank-pairs")
class RankPairsStep(Step):
    """Aggregate rankings (Borda) into (chosen, rejected) pairs: a preference dataset for DPO."""

    Params = RankPairsParams
    kinds: ClassVar[dict[str, str]] = {"data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"dataset": "dataset", "pairs": "number"}
    summary = "rankings -> a preference dataset of (chosen, rejected) pairs"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, RankPairsParams)
        from modelfab.llm.preference import pairs

        report = pairs(ctx.store, params.data, params.name, include_synthetic=params.include_synthetic,
                       all_pairs=params.all_pairs, seed=params.seed)
        ctx.log(f"{report.result.ref}: {report.as_dict()}")
        return {"dataset": report.result.ref, "pairs": report.result.items}


class SFTParams(StepParams):
    base: str
    data: str
    name: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        from modelfab.llm.sft import SFTConfig

        return _fields_of(SFTConfig, v, "sft")


@register("sft")
class SFTStep(Step):
    """Supervised fine-tuning (LoRA or full) of a causal LM on a chat dataset; checkpointed, resumable."""

    Params = SFTParams
    kinds: ClassVar[dict[str, str]] = {"base": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "metrics": "mapping"}
    summary = "SFT with TRL (LoRA or full), optional replay and a general-set regression report"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, SFTParams)
        from modelfab.llm.sft import SFTConfig, sft

        cfg = SFTConfig.model_validate({**params.config, "resume": ctx.resume or params.config.get("resume", False)})
        model = sft(ctx.store, params.base, params.data, params.name, cfg, log=ctx.log)
        return {"model": model.id, "metrics": dict(model.metrics or {})}


class DPOParams(StepParams):
    policy: str
    data: str
    name: str = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config")
    @classmethod
    def _known(cls, v: dict[str, Any]) -> dict[str, Any]:
        from modelfab.llm.dpo import DPOConfig

        return _fields_of(DPOConfig, v, "dpo")


@register("dpo")
class DPOStep(Step):
    """Direct preference optimisation of a chat model on a preference dataset; checkpointed, resumable."""

    Params = DPOParams
    kinds: ClassVar[dict[str, str]] = {"policy": "model", "data": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"model": "model", "metrics": "mapping"}
    summary = "DPO with TRL from ranking pairs; preference accuracy before and after"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, DPOParams)
        from modelfab.llm.dpo import DPOConfig, dpo

        cfg = DPOConfig.model_validate({**params.config, "resume": ctx.resume or params.config.get("resume", False)})
        model = dpo(ctx.store, params.policy, params.data, params.name, cfg, log=ctx.log)
        return {"model": model.id, "metrics": dict(model.metrics or {})}


class IndexParams(StepParams):
    docs: str
    encoder: str
    name: str = Field(min_length=1)
    chunk_tokens: int = Field(default=200, ge=8)
    overlap: int = Field(default=40, ge=0)


@register("llm-index")
class IndexStep(Step):
    """Chunk a document folder, embed the chunks with a registered encoder, register a faiss index."""

    Params = IndexParams
    kinds: ClassVar[dict[str, str]] = {"encoder": "model"}
    outputs: ClassVar[dict[str, str]] = {"index": "model", "chunks": "number"}
    summary = "build a knowledge index (chunks + embeddings + faiss) with lineage to its encoder"

    def fingerprint(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, IndexParams)
        return {"docs": _content_fingerprint(params.docs)}

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, IndexParams)
        from modelfab.llm.rag.index import build_index

        model = build_index(ctx.store, params.docs, params.encoder, params.name, params.chunk_tokens, params.overlap)
        count = int((model.metrics or {}).get("chunks", 0) or 0)
        ctx.log(f"index {model.name}:{model.version} ({model.id})")
        return {"index": model.id, "chunks": count}


class QAEvalParams(StepParams):
    index: str
    model: str
    qa: str
    k: int = Field(default=4, ge=1)
    limit: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=96, ge=1)
    compare_without_retrieval: bool = True


@register("qa-eval")
class QAEvalStep(Step):
    """Answer a QA set with retrieval (and, for comparison, without): recall@k, F1, key facts, accuracy."""

    Params = QAEvalParams
    kinds: ClassVar[dict[str, str]] = {"index": "model", "model": "model"}
    outputs: ClassVar[dict[str, str]] = {"metrics": "mapping"}
    summary = "knowledge-QA evaluation: retrieval recall@k and answer accuracy vs no retrieval"

    def fingerprint(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, QAEvalParams)
        return {"qa": _content_fingerprint(params.qa)}

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, QAEvalParams)
        from modelfab.llm.rag.qa_eval import evaluate_qa

        keys = ("recall@1", "recall@k", "f1", "fact_score", "accuracy", "over_context")
        arms = [True, False] if params.compare_without_retrieval else [True]
        metrics: dict[str, Any] = {}
        for retrieval in arms:
            rep = evaluate_qa(ctx.store, params.index, params.model, params.qa, k=params.k, retrieval=retrieval,
                              limit=params.limit, max_new_tokens=params.max_new_tokens)
            arm = "rag" if retrieval else "no_retrieval"
            metrics[arm] = {key: rep.get(key) for key in keys if rep.get(key) is not None}
            ctx.log(f"{arm}: {metrics[arm]}")
        return {"metrics": metrics}


class LMEvalParams(StepParams):
    model: str
    general: str | None = None
    preferences: str | None = None
    split: Literal["train", "val", "test", "all"] = "test"
    max_items: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> LMEvalParams:
        if not self.general and not self.preferences:
            raise ValueError("give general (a general held-out dataset) and/or preferences (a preference dataset)")
        return self


@register("llm-eval")
class LMEvalStep(Step):
    """Evaluate a chat model: mean token NLL on a general set and/or preference accuracy on pairs."""

    Params = LMEvalParams
    kinds: ClassVar[dict[str, str]] = {"model": "model", "general": "dataset", "preferences": "dataset"}
    outputs: ClassVar[dict[str, str]] = {"metrics": "mapping"}
    summary = "general-set NLL and preference accuracy of a chat model"

    def run(self, ctx: StepContext, params: StepParams) -> dict[str, Any]:
        assert isinstance(params, LMEvalParams)
        from modelfab.llm.lm_eval import evaluate_registered

        rep = evaluate_registered(ctx.store, params.model, general_ref=params.general,
                                  preferences_ref=params.preferences, split=params.split, max_items=params.max_items)
        return {"metrics": rep}
