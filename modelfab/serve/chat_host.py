"""Chat models and text encoders hosted by the serve app (the routes are in :mod:`modelfab.serve.chat`).

:class:`ChatHost` owns the chat models and text encoders of one app. Every causal LM is loaded once
(an :class:`LMGroup`): the LoRA chat L2s served over it become named PEFT adapters on that one
module, the base (an L0/L1, or a full chat L2) runs with its adapters disabled. A request takes the
group's lock, activates its adapter and generates; generation runs in the host's thread pool, never
on the event loop, and a streamed answer sends each piece of text as soon as the model produces it.
Prompts are checked before anything is sent, so a prompt over the context limit is a 413 JSON error.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from modelfab.core.errors import ConfigError, ModelfabError
from modelfab.llm.models import (
    CHAT_TASK,
    ChatModel,
    ContextLengthError,
    apply_lora,
    context_length,
    load_base,
)
from modelfab.serve.config import ServeSettings
from modelfab.serve.inputs import ApiError
from modelfab.serve.metrics import Metrics
from modelfab.serve.schemas import (
    ModelCard,
)
from modelfab.store.models import model_card
from modelfab.store.schema import Deployment, Model
from modelfab.store.store import Store, new_id

if TYPE_CHECKING:
    pass

log = logging.getLogger("modelfab.serve")
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
WARMUP_CHAT = [{"role": "user", "content": "hello"}]
MIN_TEMPERATURE = 1e-2  # below it sampling is greedy (dividing logits by ~0 overflows to inf / NaN)
Kind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class ChatPlan:
    """What will be served for one requested reference of a chat model or text encoder."""

    ref: str  # as requested: id, name, name:version or name@alias
    model: Model
    kind: Kind  # chat: completions (and embeddings); embedding: a text encoder
    method: str  # lora (adapter over base_id), full (a whole chat L2), base (an L0/L1 causal LM), encoder
    base_id: str | None  # the causal LM whose single in-memory copy runs it (chat kinds)


def plan_chat(store: Store, ref: str) -> ChatPlan | None:
    """The plan of ``ref`` when it is a chat model or a text encoder; None for a scenario model.

    Chat: task ``chat`` (a LoRA or full L2) or an L0/L1 causal LM (modality ``lm``). Text encoder:
    a registered backbone of modality ``text``. Cheap (registry and card only); ConfigError when a
    chat model cannot be served.
    """
    model = store.get_model(ref)
    card = model_card(store, model.id)
    if "scenario" in card or "exported" in card:
        return None
    modality = str((model.architecture or {}).get("modality", ""))
    chat = card.get("chat")
    if isinstance(chat, dict) and chat.get("method") == "lora":
        base = store.get_model(str(chat["base"]))
        if (base.architecture or {}).get("modality") != "lm" or not model.weights_digest:
            raise ConfigError(f"cannot serve {ref}: its LoRA base {base.name}:{base.version} is not a causal LM "
                              "or it has no adapter weights")
        return ChatPlan(ref, model, "chat", "lora", base.id)
    if "backbone" in card and modality == "lm":
        return ChatPlan(ref, model, "chat", "full" if model.task == CHAT_TASK else "base", model.id)
    if "backbone" in card and modality == "text":
        return ChatPlan(ref, model, "embedding", "encoder", None)
    if model.task == CHAT_TASK:
        raise ConfigError(f"cannot serve {ref}: chat model without a causal LM backbone or a LoRA adapter")
    return None


def split_models(store: Store, refs: Sequence[str]) -> tuple[list[str], list[ChatPlan]]:
    """``refs`` -> (scenario model refs for the predict route, chat/embedding plans)."""
    scenario: list[str] = []
    chats: list[ChatPlan] = []
    for ref in refs:
        plan = plan_chat(store, ref)
        if plan is None:
            scenario.append(ref)
        else:
            chats.append(plan)
    return scenario, chats


def start_chat_deployments(store: Store, plans: Sequence[ChatPlan], base_url: str) -> dict[str, str]:
    """An ``active`` deployment per chat/embedding plan; returns ref -> deployment id."""
    ids: dict[str, str] = {}
    with store.transaction() as s:
        for plan in plans:
            path = CHAT_PATH if plan.kind == "chat" else EMBEDDINGS_PATH
            dep = Deployment(id=new_id("d"), model_id=plan.model.id, endpoint=f"{base_url.rstrip('/')}{path}",
                             runtime="torch", status="active",
                             counters={"ref": plan.ref, "source_model": plan.model.id, "kind": plan.kind})
            s.add(dep)
            ids[plan.ref] = dep.id
    return ids


def _bytes(tensors: Iterator[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class LMGroup:
    """One causal LM in memory with the LoRA adapters of every chat L2 served over it."""

    def __init__(self, store: Store, base_id: str) -> None:
        self.backbone, self.base = load_base(store, base_id)
        self.module: Any = self.backbone.module.eval()  # becomes a PeftModel with the first adapter
        self.max_length = context_length(self.backbone)
        self.lock = threading.Lock()  # one generation (or embedding) at a time on this module
        self.adapters: dict[str, int] = {}  # adapter name -> its parameter bytes
        self.members = 0
        self._active: str | None = None

    @property
    def base_bytes(self) -> int:
        """Weight bytes of the base model (every parameter that is not an adapter's)."""
        return _bytes(p for n, p in self.module.named_parameters() if "lora_" not in n)

    def add_adapter(self, store: Store, model: Model) -> str:
        """Load the LoRA adapter of chat L2 ``model`` into this module; returns the adapter's name."""
        name = "a_" + model.id.replace("-", "_")
        if name not in self.adapters:
            self.module = apply_lora(self.module, store, model, adapter_name=name)
            for p in self.module.parameters():
                p.requires_grad_(False)
            self.adapters[name] = _bytes(p for n, p in self.module.named_parameters() if f".{name}." in n)
            self._active = None  # adding an adapter may change the active one: switch on next use
        return name

    @contextlib.contextmanager
    def using(self, adapter: str | None) -> Iterator[None]:
        """Hold the lock with ``adapter`` active (None: the base model itself, every adapter disabled)."""
        with self.lock:
            if not self.adapters:
                yield
            elif adapter is None:
                with self.module.disable_adapter():
                    yield
            else:
                if self._active != adapter:
                    self.module.set_adapter(adapter)
                    self._active = adapter
                yield


@dataclass
class Completion:
    """One finished completion; times are seconds from the request's arrival."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Literal["stop", "length"]
    queued_s: float  # waiting for the model
    first_token_s: float  # the client's time to first token
    total_s: float

    @property
    def generation_s(self) -> float:
        return max(self.total_s - self.queued_s, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.generation_s


@dataclass
class ChatEntry:
    """One chat model or text encoder as this server serves it."""

    plan: ChatPlan
    names: set[str]  # what a key scope may call it
    group: LMGroup | None = None
    adapter: str | None = None
    chat: ChatModel | None = None  # generates on the group's module (under the group's lock)
    checker: ChatModel | None = None  # a tokenizer copy to check prompts without waiting for the model
    encoder: Any = None  # a text backbone (kind embedding)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # guards the encoder or the checker
    own_bytes: int = 0
    deployment_id: str | None = None
    counters: Counter[str] = field(default_factory=Counter)

    @property
    def ref(self) -> str:
        return self.plan.ref

    @property
    def backbone(self) -> Any:
        return self.group.backbone if self.group is not None else self.encoder

    @property
    def max_length(self) -> int:
        if self.group is not None:
            return self.group.max_length
        return int(self.encoder.input_spec.max_length or 512)

    @property
    def shared_base(self) -> str | None:
        return self.group.base.id if self.group is not None and self.group.members > 1 else None

    def holding(self) -> contextlib.AbstractContextManager[Any]:
        """The lock (and adapter) this entry's model runs under."""
        return self.group.using(self.adapter) if self.group is not None else self.lock


class ChatHost:
    """The chat models and text encoders of one app: loading, lookup, prompt checks, generation, embeddings."""

    def __init__(self, store: Store, plans: Sequence[ChatPlan], settings: ServeSettings, metrics: Metrics) -> None:
        self.store = store
        self.plans = list(plans)
        self.settings = settings
        self.metrics = metrics
        self.groups: dict[str, LMGroup] = {}  # base model id -> its one loaded copy
        self.entries: dict[str, ChatEntry] = {}  # ref -> entry
        self.index: dict[str, ChatEntry] = {}  # every name a request may use
        self.pending = 0
        # generation threads use the runtime's intra-op threads, like the scenario models' inference thread
        self.executor = ThreadPoolExecutor(max_workers=settings.chat_workers, thread_name_prefix="modelfab-chat",
                                           initializer=torch.set_num_threads,
                                           initargs=(settings.threads or torch.get_num_threads(),))

    def load(self) -> None:
        """Load every plan (blocking; the app runs it off the event loop), one copy per base LM."""
        encoders: dict[str, tuple[Any, threading.Lock]] = {}  # model id -> its one loaded copy and lock
        for plan in self.plans:
            m = plan.model
            entry = ChatEntry(plan, {plan.ref, m.id, m.name, f"{m.name}:{m.version}"})
            if plan.kind == "chat":
                assert plan.base_id is not None
                group = self.groups.get(plan.base_id)
                if group is None:
                    group = self.groups[plan.base_id] = LMGroup(self.store, plan.base_id)
                group.members += 1
                entry.group = group
                if plan.method == "lora":
                    entry.adapter = group.add_adapter(self.store, m)
                    entry.own_bytes = group.adapters[entry.adapter]
            else:
                from modelfab.zoo.registry import load_registered

                if m.id not in encoders:
                    encoders[m.id] = (load_registered(self.store, m.id)[0], threading.Lock())
                entry.encoder, entry.lock = encoders[m.id]
                entry.encoder.module.eval()
                entry.own_bytes = _bytes(iter(entry.encoder.module.parameters()))
            self.entries[plan.ref] = entry
        for entry in self.entries.values():  # after every adapter is in: the module is final
            group = entry.group
            if group is None:
                continue
            if entry.adapter is None:
                entry.own_bytes = group.base_bytes
            tok = group.backbone.tokenizer
            entry.chat = ChatModel(entry.plan.model, group.module, tok, group.max_length, group.base)
            entry.checker = ChatModel(entry.plan.model, None, copy.deepcopy(tok), group.max_length, group.base)
        for key in ("ref", "id", "name"):  # exact refs first; other names only when unambiguous
            for entry in self.entries.values():
                m = entry.plan.model
                cands = {"ref": [entry.ref], "id": [m.id], "name": [m.name, f"{m.name}:{m.version}"]}[key]
                for cand in cands:
                    self.index.setdefault(cand, entry)
        if self.settings.warmup:
            for entry in self.entries.values():
                if entry.chat is not None:
                    self.generate(entry, WARMUP_CHAT, 1, 0.0, 1.0, None, time.perf_counter())
                else:
                    self.embed(entry, ["warm-up"])

    def attach(self, deployments: dict[str, str]) -> None:
        for ref, entry in self.entries.items():
            entry.deployment_id = deployments.get(ref)

    def counters(self) -> dict[str, dict[str, int]]:
        """Deployment id -> this process's counters (added to the deployment rows at shutdown)."""
        return {e.deployment_id: dict(e.counters) for e in self.entries.values() if e.deployment_id}

    def find(self, name: str) -> ChatEntry | None:
        """The entry ``name`` refers to: a served name, or NAME@alias resolved now (blocking for aliases)."""
        entry = self.index.get(name)
        if entry is None and "@" in name:
            try:
                entry = self.index.get(self.store.get_model(name).id)
            except ModelfabError:
                return None
        return entry

    def budget(self, entry: ChatEntry, messages: Sequence[dict[str, str]], requested: int | None) -> tuple[int, int]:
        """(prompt tokens, tokens to generate); ContextLengthError (413) when they do not fit the context."""
        checker = entry.checker
        assert checker is not None
        with entry.lock:  # the checker's tokenizer is this entry's alone
            if requested is not None:
                return len(checker.encode(messages, requested)), requested
            n = len(checker.encode(messages))
        room = entry.max_length - n
        if room < 1:
            raise ContextLengthError(f"prompt is {n} tokens, which leaves no room to generate in the context "
                                     f"limit of {entry.max_length} tokens of {entry.plan.model.name}")
        s = self.settings
        return n, min(s.chat_default_max_tokens, s.chat_max_tokens, room)

    def admit(self) -> None:
        """Count one more running or queued request; 429 above ``chat_max_pending`` (event loop only)."""
        if self.pending >= self.settings.chat_max_pending:
            raise ApiError(429, "too_many_requests",
                           f"{self.pending} chat/embedding requests are pending; retry later")
        self.pending += 1
        self.metrics.chat_pending.set(self.pending)

    def release(self) -> None:
        self.pending = max(0, self.pending - 1)
        self.metrics.chat_pending.set(self.pending)

    def generate(self, entry: ChatEntry, messages: Sequence[dict[str, str]], max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, started: float,
                 on_piece: Callable[[str], None] | None = None) -> Completion:
        """Complete ``messages`` with ``entry``'s model, passing each text piece to ``on_piece`` as it comes.

        Blocking: run it in :attr:`executor`. ``started`` (``time.perf_counter``) is the request's arrival.
        Greedy answers (``temperature`` below :data:`MIN_TEMPERATURE`) are those of :meth:`ChatModel.generate`
        offline; the token counts are exact (the generated ids, end-of-turn token included).
        """
        chat = entry.chat
        assert chat is not None
        tok = chat.tokenizer
        pieces: list[str] = []
        first: list[float] = []

        def emit(piece: str) -> None:
            if not first:
                first.append(time.perf_counter() - started)
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)

        sample = temperature >= MIN_TEMPERATURE
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "pad_token_id": tok.pad_token_id,
                                  "eos_token_id": tok.eos_token_id, "do_sample": sample}
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p)
        with entry.holding():
            queued = time.perf_counter() - started
            ids = chat.encode(messages, max_tokens)
            input_ids = torch.tensor([ids])  # (1, T)
            streamer = _streamer_class()(tok, emit)
            with torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                chat.module.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), streamer=streamer,
                                     **kwargs)
            total = time.perf_counter() - started
        ended = streamer.last_token is not None and streamer.last_token == tok.eos_token_id
        reason: Literal["stop", "length"] = "length" if streamer.tokens >= max_tokens and not ended else "stop"
        return Completion("".join(pieces), len(ids), streamer.tokens, reason, queued, first[0] if first else total,
                          total)

    def embed(self, entry: ChatEntry, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """(N, D) float32 embeddings of ``texts`` and their token count (blocking: run it in :attr:`executor`).

        ContextLengthError (413) for a text over the model's limit (it is not truncated silently).
        """
        backbone = entry.backbone
        limit = entry.max_length
        with entry.holding():
            counts = [_token_count(backbone, t) for t in texts]
            for i, n in enumerate(counts):
                if n > limit:
                    raise ContextLengthError(f"input[{i}] is {n} tokens, over the limit of {limit} tokens of "
                                             f"{entry.plan.model.name}")
            with torch.inference_mode():
                vectors = backbone.embed(backbone.preprocess(list(texts)))  # (N, D)
        return vectors.float().cpu().numpy(), sum(counts)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


@functools.cache
def _streamer_class() -> type[Any]:
    """A transformers ``TextStreamer`` that hands each finished piece of text to a callback and counts tokens."""
    from transformers import TextStreamer

    class PieceStreamer(TextStreamer):
        def __init__(self, tokenizer: Any, on_text: Callable[[str], None]) -> None:
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.on_text = on_text
            self.tokens = 0
            self.last_token: int | None = None

        def put(self, value: torch.Tensor) -> None:
            if not self.next_tokens_are_prompt:  # the first call carries the prompt
                flat = value.reshape(-1)
                self.tokens += int(flat.numel())
                if flat.numel():
                    self.last_token = int(flat[-1])
            super().put(value)

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.on_text(text)

    return PieceStreamer


def _token_count(backbone: Any, text: str) -> int:
    """Tokens of ``text`` as the backbone sees it (special tokens included)."""
    if hasattr(backbone, "token_count"):
        return int(backbone.token_count(text))
    tokenizer = getattr(backbone, "tokenizer", None)
    return len(tokenizer(text)["input_ids"]) if tokenizer is not None else 0


def chat_card(entry: ChatEntry) -> ModelCard:
    """The model card of a served chat model or text encoder."""
    p, m = entry.plan, entry.plan.model
    modality = str((m.architecture or {}).get("modality") or ("lm" if p.kind == "chat" else "text"))
    return ModelCard(
        name=p.ref, id=m.id, model_name=m.name, version=m.version, tier=m.tier, task=m.task, modality=modality,
        classes=[], positive=None, threshold=None, runtime="torch", method=p.method, parent_id=m.parent_id,
        dataset_version_id=m.dataset_version_id, deployment_id=entry.deployment_id, shared_base=entry.shared_base,
        own_bytes=entry.own_bytes, metrics=dict(m.metrics or {}), kind=p.kind, context_length=entry.max_length,
    )
