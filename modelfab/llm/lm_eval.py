"""Language-model evaluations: regression on general text (the forgetting guard) and preference accuracy.

* :func:`general_nll`: mean negative log-likelihood per token of held-out general samples (plain
  texts, or chats rendered through the chat template; every token counts).
* :func:`regression_report`: that NLL for the model before and after tuning, and the relative
  change ``general_nll_change = tuned / base - 1`` (positive: the tuned model got worse on general
  data).  The keys are stored in model metrics so a workflow approve rule can read them.
* :func:`preference_accuracy`: on held-out pairs, the fraction where the chosen answer gets the
  higher mean per-token log-likelihood than the rejected one; with a reference model also the DPO
  implicit reward comparison: ``(log pi(c) - log ref(c)) > (log pi(r) - log ref(r))`` on summed
  log-probabilities, and the mean of that margin.
* :func:`evaluate_registered`: both, for a registered model and datasets (``modelfab llm eval``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from modelfab.core.errors import ConfigError, DataError
from modelfab.llm.models import check_messages, render_chat
from modelfab.llm.samples import Pair, Sample, encode_chat, encode_text

if TYPE_CHECKING:
    from modelfab.store.store import Store

Encoded = tuple[list[int], list[int]]  # token ids (T,), 0/1 mask of the scored tokens (T,)


@contextmanager
def _eval_mode(module: Any) -> Iterator[None]:
    was_training = bool(getattr(module, "training", False))
    module.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training:
            module.train()


def masked_logprobs(module: Any, tokenizer: Any, seqs: Sequence[Encoded],
                    batch_size: int = 4) -> list[tuple[float, int]]:
    """For each (ids, mask): the summed log-probability of the masked tokens and how many there are.

    Token ``t`` is scored from positions ``< t``, so the first token of a sequence is never scored.
    """
    if not seqs:
        return []
    device = next(module.parameters()).device
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    out: list[tuple[float, int]] = []
    with _eval_mode(module):
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            width = max(max(len(ids) for ids, _ in chunk), 2)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)  # (B, T)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)  # (B, T)
            score = torch.zeros((len(chunk), width), dtype=torch.float32)  # (B, T)
            for row, (tokens, mask) in enumerate(chunk):
                ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
                attn[row, : len(tokens)] = 1
                score[row, : len(mask)] = torch.tensor(mask, dtype=torch.float32)
            ids, attn, score = ids.to(device), attn.to(device), score.to(device)
            logits = module(input_ids=ids, attention_mask=attn).logits.float()  # (B, T, V)
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
            weight = score[:, 1:] * attn[:, 1:]  # (B, T-1)
            sums = -(nll * weight).sum(1)  # (B,)
            counts = weight.sum(1)  # (B,)
            out += [(float(s), int(c)) for s, c in zip(sums.tolist(), counts.tolist(), strict=True)]
    return out


def encode_sample(tokenizer: Any, sample: Sample, max_length: int) -> Encoded:
    """A plain text (+ end of sequence) or a whole rendered chat, every token scored, cut to ``max_length``."""
    if isinstance(sample, str):
        ids = encode_text(tokenizer, sample)
    else:
        text = render_chat(tokenizer, check_messages(sample), add_generation_prompt=False)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids = ids[:max_length]
    return ids, [1] * len(ids)


def general_nll(module: Any, tokenizer: Any, samples: Sequence[Sample], max_length: int = 512,
                batch_size: int = 4) -> float:
    """Mean NLL per token (nats) of ``samples`` (texts or chats), weighted by token count."""
    if not samples:
        raise DataError("general evaluation: no samples")
    scores = masked_logprobs(module, tokenizer, [encode_sample(tokenizer, s, max_length) for s in samples],
                             batch_size)
    tokens = sum(n for _, n in scores)
    if tokens == 0:
        raise DataError("general evaluation: the samples hold no scorable tokens")
    return -sum(s for s, _ in scores) / tokens


def regression_change(base_nll: float, tuned_nll: float) -> dict[str, float]:
    """The regression metrics from two NLLs (``general_nll_change`` is relative: tuned / base - 1)."""
    return {"general_nll_base": round(base_nll, 6), "general_nll_tuned": round(tuned_nll, 6),
            "general_nll_change": round(tuned_nll / base_nll - 1.0, 6) if base_nll > 0 else 0.0}


def regression_report(base_module: Any, tuned_module: Any, tokenizer: Any, samples: Sequence[Sample],
                      max_length: int = 512, batch_size: int = 4) -> dict[str, float]:
    """General-data NLL of the base and the tuned model and its relative change."""
    base = general_nll(base_module, tokenizer, samples, max_length, batch_size)
    tuned = general_nll(tuned_module, tokenizer, samples, max_length, batch_size)
    return regression_change(base, tuned)


@dataclass
class PairScore:
    """Summed log-probabilities and token counts of a pair's two responses."""

    chosen: float
    chosen_tokens: int
    rejected: float
    rejected_tokens: int

    def likelihood_prefers_chosen(self) -> bool:
        """Mean per-token log-likelihood of chosen strictly above rejected's (ties count as wrong)."""
        if not self.chosen_tokens or not self.rejected_tokens:
            return False
        return self.chosen / self.chosen_tokens > self.rejected / self.rejected_tokens


def _as_pair(p: Pair | Mapping[str, Any]) -> Pair:
    if isinstance(p, Pair):
        return p
    return Pair(str(p.get("key", "")), check_messages(p["prompt"]), str(p["chosen"]), str(p["rejected"]))


def pair_scores(module: Any, tokenizer: Any, pairs: Sequence[Pair | Mapping[str, Any]], max_length: int = 512,
                batch_size: int = 4) -> list[PairScore]:
    """Score both responses of every pair as the assistant's answer to its prompt."""
    seqs: list[Encoded] = []
    for pair in map(_as_pair, pairs):
        for response in (pair.chosen, pair.rejected):
            ids, mask = encode_chat(tokenizer, [*pair.prompt, {"role": "assistant", "content": response}],
                                    last_only=True)
            seqs.append((ids[:max_length], mask[:max_length]))
    flat = masked_logprobs(module, tokenizer, seqs, batch_size)
    return [PairScore(flat[i][0], flat[i][1], flat[i + 1][0], flat[i + 1][1]) for i in range(0, len(flat), 2)]


def preference_metrics(policy: Sequence[PairScore], reference: Sequence[PairScore] | None = None) -> dict[str, Any]:
    """``preference_accuracy`` (likelihood), and with a reference ``reward_accuracy`` / ``reward_margin``."""
    if not policy:
        raise DataError("preference evaluation: no pairs")
    out: dict[str, Any] = {"pairs": len(policy),
                           "preference_accuracy": sum(s.likelihood_prefers_chosen() for s in policy) / len(policy)}
    if reference is not None:
        margins = [(p.chosen - r.chosen) - (p.rejected - r.rejected) for p, r in zip(policy, reference, strict=True)]
        out["reward_accuracy"] = sum(m > 0 for m in margins) / len(margins)
        out["reward_margin"] = sum(margins) / len(margins)
    return out


def preference_accuracy(module: Any, tokenizer: Any, pairs: Sequence[Pair | Mapping[str, Any]],
                        reference_module: Any = None, max_length: int = 512, batch_size: int = 4) -> dict[str, Any]:
    """Held-out preference evaluation of ``module`` (see the module docstring).

    ``pairs``: :class:`~modelfab.llm.samples.Pair` or mappings ``{prompt: [messages], chosen, rejected}``.
    Returns ``{"pairs", "preference_accuracy"}`` plus ``reward_accuracy`` and ``reward_margin`` when
    ``reference_module`` is given (it must share ``tokenizer``).
    """
    policy = pair_scores(module, tokenizer, pairs, max_length, batch_size)
    reference = (pair_scores(reference_module, tokenizer, pairs, max_length, batch_size)
                 if reference_module is not None else None)
    return preference_metrics(policy, reference)


def evaluate_registered(store: Store, model_ref: str, *, general_ref: str | None = None,
                        preferences_ref: str | None = None, split: str = "test", reference_ref: str | None = None,
                        max_length: int = 512, max_items: int | None = None, batch_size: int = 4) -> dict[str, Any]:
    """Evaluate a registered chat model on a general set (mean token NLL) and/or preference pairs.

    ``split``: the dataset split read (``all``: every item).  ``reference_ref``: a model whose
    log-probabilities give the DPO implicit reward (it must use the same tokenizer).
    """
    from modelfab.llm.models import load_chat_model
    from modelfab.llm.samples import general_samples, parse_pair
    from modelfab.llm.train_common import dataset_ref, load_dataset, split_rows

    if not general_ref and not preferences_ref:
        raise ConfigError("give --general and/or --preferences: a dataset to evaluate on")
    chat = load_chat_model(store, model_ref)
    out: dict[str, Any] = {"model": f"{chat.model.name}:{chat.model.version}", "split": split}

    def rows_of(ref: str, modalities: tuple[str, ...], what: str) -> tuple[Any, list[Any]]:
        dv, rows = load_dataset(store, ref, modalities, what)
        picked = list(rows) if split == "all" else split_rows(rows, split)
        if not picked:
            raise DataError(f"{what}: {dataset_ref(dv)} has no items in split {split!r}")
        return dv, picked[:max_items] if max_items else picked

    if general_ref:
        dv, rows = rows_of(general_ref, ("chat", "text"), "general")
        samples = general_samples(rows, dv.dataset.modality)
        out.update(general=dataset_ref(dv), general_samples=len(samples),
                   general_nll=general_nll(chat.module, chat.tokenizer, samples, max_length, batch_size))
    if preferences_ref:
        dv, rows = rows_of(preferences_ref, ("preference",), "preferences")
        pairs = [parse_pair(r) for r in rows]
        reference = None
        if reference_ref:
            ref_chat = load_chat_model(store, reference_ref)
            if ref_chat.tokenizer.get_vocab() != chat.tokenizer.get_vocab():
                raise ConfigError(f"reference: {reference_ref} uses another tokenizer than {model_ref}")
            reference = ref_chat.module
            out["reference"] = f"{ref_chat.model.name}:{ref_chat.model.version}"
        out["preferences"] = dataset_ref(dv)
        out["synthetic_fraction"] = sum(p.synthetic for p in pairs) / len(pairs)
        out.update(preference_accuracy(chat.module, chat.tokenizer, pairs, reference, max_length, batch_size))
    return out
