"""Chat models in the registry: load any causal-LM L0/L1 or a chat L2, render chats, generate.

A chat L2 (task ``chat``) is registered by :func:`register_chat_model` in one of two forms:

* ``lora``: the weights artifact holds only the PEFT adapter tensors; the card's ``chat`` entry
  names the ``base`` model (an L0/L1 causal LM) and the adapter's ``peft_config``.  A hundred
  assistants share one backbone on disk (and in serving, see :mod:`modelfab.serve.chat`).
* ``full``: a whole causal LM, stored like any backbone (its card carries ``backbone``).

Every card also carries the chat ``template`` used in training, so serving renders prompts the
same way.  Nothing here unpickles: weights are safetensors, configs JSON.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from modelfab.core.errors import ConfigError, DataError
from modelfab.core.optional import import_optional
from modelfab.zoo.lm.causal import CausalLMBackbone

if TYPE_CHECKING:
    from modelfab.store.schema import Model
    from modelfab.store.store import Store

CHAT_TASK = "chat"
Message = Mapping[str, str]
ROLES = ("system", "user", "assistant")

# Used when a tokenizer has no chat template of its own (ChatML, as SmolLM2 uses).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ContextLengthError(DataError):
    """A prompt (or prompt + requested tokens) does not fit the model's context window."""

    http_status = 413


def check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """Validate a chat: a non-empty list of {role, content} with known roles; returns plain dicts."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise DataError("messages: expected a non-empty list of {role, content} objects")
    out = []
    for n, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise DataError(f"messages[{n}]: expected {{role: one of {', '.join(ROLES)}, content: string}}")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


@dataclass
class Generation:
    """One completion with its token counts and timings."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    first_token_s: float
    total_s: float
    finish_reason: str = "stop"

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0


@dataclass
class ChatModel:
    """A ready-to-generate causal LM (with its LoRA adapter applied, if any) and tokenizer."""

    model: Model
    module: Any  # transformers causal LM, or a PeftModel over one
    tokenizer: Any
    max_length: int
    base: Model
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The chat as the model sees it (the tokenizer's chat template, or ChatML)."""
        return render_chat(self.tokenizer, check_messages(messages), add_generation_prompt)

    def encode(self, messages: Sequence[Message], max_new_tokens: int = 0) -> list[int]:
        """Prompt token ids; :class:`ContextLengthError` when prompt + ``max_new_tokens`` exceed the context."""
        ids = list(self.tokenizer(self.render(messages), add_special_tokens=False)["input_ids"])
        if len(ids) + max_new_tokens > self.max_length:
            raise ContextLengthError(
                f"prompt is {len(ids)} tokens + {max_new_tokens} new tokens, over the context limit of "
                f"{self.max_length} tokens of {self.model.name}")
        return ids

    def _gen_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict[str, Any]:
        if max_new_tokens < 1:
            raise ConfigError(f"max_tokens: must be >= 1, got {max_new_tokens}")
        kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id,
                              "eos_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kw.update(do_sample=False)
        return kw

    def stream(self, messages: Sequence[Message], max_new_tokens: int = 64, temperature: float = 0.0,
               top_p: float = 1.0, seed: int | None = None) -> Iterator[str]:
        """Text pieces as they are generated (a background thread runs ``generate``)."""
        from transformers import TextIteratorStreamer

        ids = self.encode(messages, max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self._gen_kwargs(max_new_tokens, temperature, top_p)
        input_ids = torch.tensor([ids])  # (1, T)
        errors: list[BaseException] = []

        def work() -> None:
            with self.lock, torch.inference_mode():
                if seed is not None:
                    torch.manual_seed(seed)
                try:
                    self.module.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                         streamer=streamer, **kwargs)
                except BaseException as exc:  # surfaced to the consumer below
                    errors.append(exc)
                    streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from (piece for piece in streamer if piece)
        thread.join()
        if errors:
            raise errors[0]

    def generate(self, messages: Sequence[Message], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> Generation:
        """One completion of ``messages`` with timings (time to first token measured by streaming)."""
        start = time.perf_counter()
        first: float | None = None
        pieces = []
        for piece in self.stream(messages, max_new_tokens, temperature, top_p, seed):
            first = first if first is not None else time.perf_counter() - start
            pieces.append(piece)
        total = time.perf_counter() - start
        text = "".join(pieces)
        n_prompt = len(self.encode(messages))
        n_out = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        reason = "length" if n_out >= max_new_tokens else "stop"
        return Generation(text, n_prompt, n_out, first if first is not None else total, total, reason)

    def response_logprob(self, messages: Sequence[Message], response: str) -> float:
        """Sum of log-probabilities of ``response``'s tokens as the assistant's answer to ``messages``."""
        prompt = self.encode(messages)
        answer = list(self.tokenizer(response, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([prompt + answer])[:, : self.max_length]  # (1, T)
        with self.lock, torch.inference_mode():
            logits = self.module(input_ids=ids).logits.float()  # (1, T, V)
        logp = torch.log_softmax(logits[0, :-1], dim=-1)  # (T-1, V): position t predicts token t+1
        targets = ids[0, 1:]
        picked = logp.gather(1, targets[:, None])[:, 0]  # (T-1,)
        return float(picked[len(prompt) - 1:].sum())


def render_chat(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """Render through the tokenizer's chat template, or :data:`DEFAULT_CHAT_TEMPLATE` if it has none."""
    template = getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    return str(tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                             add_generation_prompt=add_generation_prompt))


def import_peft() -> Any:
    """The peft module (in the ``lm`` extra)."""
    return import_optional("peft", "peft", "lm")


def load_base(store: Store, ref: str) -> tuple[CausalLMBackbone, Model]:
    """A registered causal-LM backbone (L0/L1, or a full chat L2) and its registry row."""
    from modelfab.zoo.registry import load_registered

    backbone, model = load_registered(store, ref)
    if not isinstance(backbone, CausalLMBackbone):
        raise ConfigError(f"model {ref!r} is a {backbone.input_spec.modality} backbone, not a causal language model")
    return backbone, model


def lora_info(store: Store, model: Model) -> dict[str, Any] | None:
    """The ``chat`` card entry of a LoRA chat L2, else None."""
    from modelfab.store.models import model_card

    info = model_card(store, model.id).get("chat")
    return dict(info) if isinstance(info, dict) and info.get("method") == "lora" else None


def apply_lora(module: Any, store: Store, model: Model, adapter_name: str = "default") -> Any:
    """Wrap ``module`` (or add to an existing PeftModel) with the LoRA adapter stored for ``model``."""
    peft = import_peft()
    info = lora_info(store, model)
    if info is None or not model.weights_digest:
        raise ConfigError(f"model {model.name}:{model.version} is not a LoRA chat model")
    cfg = peft.LoraConfig(**info["peft_config"])
    state = store.artifacts.get_tensors(model.weights_digest)
    if isinstance(module, peft.PeftModel):
        module.add_adapter(adapter_name, cfg)
    else:
        module = peft.get_peft_model(module, cfg, adapter_name=adapter_name)
    result = peft.set_peft_model_state_dict(module, state, adapter_name=adapter_name)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise DataError(f"adapter of {model.name}:{model.version} does not fit its base: unexpected {unexpected[:3]}")
    module.eval()
    return module


def load_chat_model(store: Store, ref: str) -> ChatModel:
    """Any registered causal LM by reference: an L0/L1 as is, a chat L2 with its adapter applied."""
    model = store.get_model(ref)
    info = lora_info(store, model)
    if info is not None:
        backbone, base = load_base(store, info["base"])
        module = apply_lora(backbone.module, store, model)
    else:
        backbone, base = load_base(store, model.id)
        module = backbone.module
    module.eval()
    return ChatModel(model, module, backbone.tokenizer, context_length(backbone), base)


def context_length(backbone: CausalLMBackbone) -> int:
    """Tokens the model can attend to: its position limit, capped by the backbone's ``max_length``."""
    limit = int(backbone.input_spec.max_length or 512)
    positions = getattr(backbone.module.config, "max_position_embeddings", None)
    return min(limit, int(positions)) if positions else limit


def lora_state(module: Any) -> dict[str, torch.Tensor]:
    """The adapter tensors of a PeftModel (contiguous CPU copies, ready for safetensors)."""
    peft = import_peft()
    state = peft.get_peft_model_state_dict(module)
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def lora_config_dict(module: Any, adapter_name: str = "default") -> dict[str, Any]:
    """JSON-safe LoraConfig fields of ``module``'s adapter (enough to rebuild it)."""
    cfg = module.peft_config[adapter_name]
    targets = cfg.target_modules
    return {"r": int(cfg.r), "lora_alpha": int(cfg.lora_alpha), "lora_dropout": float(cfg.lora_dropout),
            "target_modules": sorted(targets) if isinstance(targets, set | list | tuple) else targets,
            "bias": str(cfg.bias), "task_type": "CAUSAL_LM"}


def register_chat_model(
    store: Store,
    *,
    name: str,
    base: Model,
    backbone: CausalLMBackbone,
    method: str,
    dataset_version: int | str | None,
    config: dict[str, Any],
    metrics: dict[str, Any],
    card: dict[str, Any] | None = None,
    parent: Model | None = None,
) -> Model:
    """Register a trained chat model as an L2 child of ``parent`` (default ``base``).

    ``method='lora'``: ``backbone.module`` is a PeftModel; only its adapter is stored, over the weights
    of ``base`` (a DPO run that continues an SFT adapter: ``base`` is the SFT model's base, ``parent``
    the SFT model).  ``method='full'``: ``backbone.module`` is a plain causal LM; stored whole.
    """
    parent = parent or base
    from modelfab.zoo.base import num_parameters
    from modelfab.zoo.registry import register_backbone

    template = getattr(backbone.tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    if method == "lora":
        module = backbone.module
        state = lora_state(module)
        weights = store.artifacts.put_tensors(state, {"builder": "peft-lora", "base": base.id})
        trainable = sum(v.numel() for v in state.values())
        info = {"method": "lora", "base": base.id, "peft_config": lora_config_dict(module), "template": template}
        return store.register_model(
            name=name, tier="L2", task=CHAT_TASK, arch={**base.architecture, "adapter": "lora"}, config=config,
            metrics=metrics, params=base.params, trainable_params=trainable, weights=weights,
            card={**(card or {}), "chat": info}, parent=parent.id, dataset_version=dataset_version,
        )
    if method == "full":
        info = {"method": "full", "base": base.id, "template": template}
        return register_backbone(store, backbone, name=name, tier="L2", task=CHAT_TASK, parent=parent.id,
                                 dataset_version=dataset_version, config=config, metrics=metrics,
                                 card={**(card or {}), "chat": info}, trainable_params=num_parameters(backbone))
    raise ConfigError(f"method: must be 'lora' or 'full', got {method!r}")


__all__ = ["CHAT_TASK", "ChatModel", "ContextLengthError", "Generation", "apply_lora",
           "check_messages", "load_base", "load_chat_model", "register_chat_model", "render_chat"]
