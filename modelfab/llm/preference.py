"""Rankings -> preference pairs for DPO: Borda aggregation per ranker group, (chosen, rejected) pairs,
human and synthetic rankers kept apart (see :func:`pairs`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelfab.core.errors import ConfigError, DataError
from modelfab.data.result import ImportResult
from modelfab.llm.formats import (
    PREFERENCE_MODALITY,
    keyed_splits,
    preference_item,
)
from modelfab.store.datasets import ItemSpec, VersionSpec, create_version
from modelfab.store.runs import finish_run, tracked_run

if TYPE_CHECKING:
    from modelfab.store.store import Store

from modelfab.llm.ranking import HUMAN, LLM_SPLITS, load_ranking

# --- DPO pairs -------------------------------------------------------------------------------------------------


def borda(rankings: Sequence[Sequence[str]], candidates: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Aggregate full rankings by Borda count (m - 1 - position points each); ties go to the candidate
    listed first in ``candidates``. Returns (order best -> worst, points)."""
    points = dict.fromkeys(candidates, 0)
    for ranking in rankings:
        m = len(ranking)
        for pos, c in enumerate(ranking):
            if c not in points:
                raise DataError(f"ranking names unknown candidate {c!r}")
            points[c] += m - 1 - pos
    index = {c: i for i, c in enumerate(candidates)}
    return sorted(candidates, key=lambda c: (-points[c], index[c])), points


def pair_ids(order: Sequence[str], all_pairs: bool = False) -> list[tuple[str, str]]:
    """(better, worse) id pairs: best vs each other (default) or every ordered pair with ``all_pairs``."""
    if all_pairs:
        return [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]
    return [(order[0], o) for o in order[1:]]


@dataclass
class PairsReport:
    """What :func:`pairs` wrote and left out."""

    result: ImportResult
    groups: dict[str, list[str]]
    pairs: dict[str, int]
    prompts: dict[str, int]
    identical: int
    unranked: int
    splits: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.result.ref, "created": self.result.created, "items": self.result.items,
                "groups": self.groups, "pairs": self.pairs, "prompts": self.prompts,
                "identical_skipped": self.identical, "unranked_prompts": self.unranked, "splits": self.splits}


def pairs(store: Store, ref: str, name: str, *, include_synthetic: bool = False, all_pairs: bool = False,
          seed: int = 0) -> PairsReport:
    """Export a preference dataset (modality ``preference``) for DPO from the rankings of ``ref``.

    Per item, the rankings of one group of rankers are aggregated by Borda count (:func:`borda`) and
    turned into (chosen, rejected) pairs: the best against each other candidate, or every ordered
    pair with ``all_pairs``. Pairs whose two texts are identical are dropped (no preference signal).

    Human and synthetic rankings are never merged: human rankers form one group (the default and
    only group); with ``include_synthetic`` the synthetic rankers form a second group aggregated on
    its own, whose pairs are separate items (keys ``<prompt>#synthetic#c1>c0``) with meta
    ``synthetic: true``. A version with only synthetic rankings needs ``include_synthetic``.
    All pairs of a prompt share one split: the ranking item's split, or a keyed split by prompt key.
    """
    rv = load_ranking(store, ref)
    rankings = rv.rankings()
    human = sorted(r for r in rankings if rv.kind(r) == HUMAN)
    synthetic = sorted(r for r in rankings if rv.kind(r) != HUMAN)
    if not rankings:
        raise DataError(f"{rv.ref}: no rankings yet (import some with `modelfab llm rank import`)")
    if not human and not include_synthetic:
        raise ConfigError(f"{rv.ref} has only synthetic rankings ({', '.join(synthetic)}); pass --include-synthetic "
                          "to build pairs from them (they are marked synthetic)")
    groups = {"human": human, **({"synthetic": synthetic} if include_synthetic and synthetic else {})}
    groups = {g: r for g, r in groups.items() if r}
    items: list[ItemSpec] = []
    counts: Counter[str] = Counter()
    prompts_used: dict[str, set[str]] = {g: set() for g in groups}
    identical = 0
    for key, prompt in rv.prompts.items():
        for group, rankers in groups.items():
            given = [rankings[r][key] for r in rankers if key in rankings[r]]
            if not given:
                continue
            who = [r for r in rankers if key in rankings[r]]
            order, points = borda(given, prompt.ids)
            for better, worse in pair_ids(order, all_pairs):
                chosen, rejected = prompt.candidates[better], prompt.candidates[worse]
                if chosen == rejected:
                    identical += 1
                    continue
                tag = "#synthetic#" if group == "synthetic" else "#"
                items.append(preference_item(
                    f"{key}{tag}{better}>{worse}", prompt.prompt, chosen, rejected, synthetic=group == "synthetic",
                    rankers=who, source=rv.ref, prompt_key=key,
                    extra={"chosen_id": better, "rejected_id": worse, "margin": points[better] - points[worse]}))
                counts[group] += 1
                prompts_used[group].add(key)
    if not items:
        raise DataError(f"{rv.ref}: no preference pairs (every ranked pair had identical texts)")
    prompt_keys = sorted({str(i.meta["prompt_key"]) for i in items})
    if all(rv.spec.splits.get(k) in LLM_SPLITS for k in prompt_keys):
        by_prompt = {k: str(rv.spec.splits[k]) for k in prompt_keys}
        info: dict[str, Any] = {"from": rv.ref, "per": "prompt"}
    else:
        by_prompt, info = keyed_splits(prompt_keys, seed)
        info["per"] = "prompt"
    splits = {i.key: by_prompt[str(i.meta["prompt_key"])] for i in items}
    spec = VersionSpec(items=items, splits=splits, split_info=info,
                       label_schema={"source": rv.ref, "aggregate": "borda",
                                     "pairing": "all-pairs" if all_pairs else "best-vs-rest", "groups": groups},
                       message=f"preference pairs from {rv.ref} ({', '.join(groups)})")
    config = {"source": rv.ref, "name": name, "include_synthetic": include_synthetic, "all_pairs": all_pairs,
              "seed": seed}
    with tracked_run(store, "llm-pairs", config=config) as run:
        dv, created = create_version(store, name, PREFERENCE_MODALITY, spec)
    unranked = sum(1 for k in rv.prompts if not any(k in prompts_used[g] for g in groups))
    finish_run(store, run.id, outputs={"dataset": f"{name}@{dv.version}", "created": created},
               metrics={"pairs": len(items), "identical_skipped": identical, "unranked_prompts": unranked})
    result = ImportResult(name, dv, created, len(items))
    return PairsReport(result, groups, dict(counts), {g: len(v) for g, v in prompts_used.items()}, identical,
                       unranked, dict(sorted(Counter(splits.values()).items())))


