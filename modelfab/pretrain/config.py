"""Configuration of the L0 model and its trainer.

Every technique of the Pangu reports is one field, so each can be switched on its own (an
ablation is a one-field diff).  The models are pydantic, frozen and strict about unknown keys; an
invalid value raises ``pydantic.ValidationError`` (a ``ValueError``) whose location is the field
path, and :func:`modelfab.pretrain.config.load_run_config` turns that into a
:class:`~modelfab.core.errors.ConfigError` naming the path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelfab.core.errors import ConfigError

NormKind = Literal["pre", "sandwich", "dssn"]
InitKind = Literal["default", "small", "tiny"]
AttentionKind = Literal["mha", "gqa", "mla"]
FfnKind = Literal["dense", "moe"]
RouterKind = Literal["topk", "aux_free", "moge"]
BalanceKind = Literal["none", "switch", "ep_group"]
StrategyKind = Literal["ddp", "fsdp"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class MoEConfig(_Strict):
    """Mixture-of-experts feed-forward (used when ``ffn: moe``)."""

    n_experts: int = Field(default=8, ge=1)
    """Routed experts N."""
    top_k: int = Field(default=2, ge=1)
    """Experts per token K (for MoGE: K in total, K/M per group)."""
    n_shared: int = Field(default=1, ge=0)
    """Always-active shared experts."""
    expert_hidden: int = Field(default=64, ge=1)
    """Hidden width of each expert's SwiGLU."""
    router: RouterKind = "topk"
    """topk: softmax + top-K (gates renormalised); aux_free: sigmoid affinity + bias for selection
    only (DeepSeek-V3); moge: grouped top-K/M per group, raw softmax gates (Pangu Pro)."""
    n_groups: int = Field(default=1, ge=1)
    """MoGE groups M (one per device); N and K must be divisible by M."""
    balance: BalanceKind = "switch"
    """Balancing loss: none, switch (micro-batch counts), ep_group (counts all-reduced over the EP group)."""
    alpha: float = Field(default=1e-2, ge=0)
    """Weight of the balancing loss."""
    bias_update_rate: float = Field(default=1e-3, ge=0)
    """gamma of the aux-loss-free bias update."""
    stat_devices: int = Field(default=0, ge=0)
    """Devices the experts are spread over for the logged imbalance score (0 = n_groups)."""

    @model_validator(mode="after")
    def _check(self) -> MoEConfig:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) > n_experts ({self.n_experts})")
        if self.router == "moge":
            if self.n_experts % self.n_groups or self.top_k % self.n_groups:
                raise ValueError(f"n_experts ({self.n_experts}) and top_k ({self.top_k}) must be divisible by n_groups")
        elif self.n_groups != 1:
            raise ValueError("n_groups > 1 needs router: moge")
        if self.stat_devices and self.n_experts % self.stat_devices:
            raise ValueError(f"n_experts ({self.n_experts}) is not divisible by stat_devices")
        return self

    @property
    def devices(self) -> int:
        return self.stat_devices or self.n_groups


class ModelConfig(_Strict):
    """A decoder-only transformer with switchable Pangu techniques."""

    vocab_size: int = Field(default=512, ge=2)
    """Tokenizer vocabulary size."""
    max_seq_len: int = Field(default=256, ge=1)
    """Longest context (positions are RoPE, so this only bounds generation)."""
    d_model: int = Field(default=64, ge=1)
    """Hidden size d."""
    n_layers: int = Field(default=2, ge=1)
    """Transformer blocks L."""
    n_heads: int = Field(default=4, ge=1)
    """Query heads."""
    n_kv_heads: int | None = None
    """Key/value heads (GQA); defaults to n_heads; must be n_heads for mha."""
    head_dim: int | None = None
    """Per-head size; defaults to d_model / n_heads."""
    ffn_hidden: int | None = None
    """Hidden width of the dense SwiGLU; defaults to 8/3 d rounded up to 8."""
    norm: NormKind = "pre"
    """pre: Pre-LN; sandwich: RMSNorm before and after each sublayer (post gains 1); dssn:
    sandwich with post gains c/sqrt(L)."""
    dssn_c_attn: float = 0.283
    """DSSN constant c of the attention branch."""
    dssn_c_mlp: float = 0.432
    """DSSN constant c of the MLP branch."""
    init: InitKind = "default"
    """default: N(0, 0.02); small: N(0, sqrt(2/(5d))); tiny: N(0, sqrt(1/(2dL))), embedding 0.5."""
    attention: AttentionKind = "mha"
    """mha, gqa, or mla (latent KV cache with decoupled RoPE)."""
    kv_latent: int = Field(default=32, ge=1)
    """MLA d_c: the cached KV latent."""
    q_latent: int = Field(default=48, ge=1)
    """MLA d'_c: the query latent."""
    rope_dim: int = Field(default=8, ge=2)
    """MLA d_h^R: the decoupled RoPE key/query size (even)."""
    rope_base: float = 10000.0
    """RoPE base frequency."""
    ffn: FfnKind = "dense"
    """dense SwiGLU or moe."""
    moe: MoEConfig = Field(default_factory=MoEConfig)
    """Settings of the MoE layers (ignored for dense)."""
    moe_first_dense: int = Field(default=0, ge=0)
    """Number of leading layers kept dense when ffn is moe."""
    mtp_depth: int = Field(default=0, ge=0)
    """MTP depth modules D (0 = off)."""
    mtp_lambda: float = Field(default=0.3, ge=0)
    """MTP loss weight lambda: L_MTP = lambda/D sum_k CE_k."""
    norm_eps: float = 1e-6
    """RMSNorm epsilon."""

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) is not divisible by n_heads ({self.n_heads})")
        kv = self.kv_heads
        if self.attention == "mha" and kv != self.n_heads:
            raise ValueError("mha needs n_kv_heads == n_heads (use attention: gqa)")
        if self.n_heads % kv:
            raise ValueError(f"n_heads ({self.n_heads}) is not divisible by n_kv_heads ({kv})")
        if self.dim_head % 2 or self.rope_dim % 2:
            raise ValueError("head_dim and rope_dim must be even (RoPE rotates pairs)")
        if self.moe_first_dense > self.n_layers:
            raise ValueError("moe_first_dense > n_layers")
        return self

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def dim_head(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def dense_hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return -(-(8 * self.d_model // 3) // 8) * 8


class TrainConfig(_Strict):
    """Optimisation, data and checkpoint settings."""

    seq_len: int = Field(default=64, ge=2)
    """Tokens per training window."""
    micro_batch: int = Field(default=8, ge=1)
    """Windows per micro-batch (per rank)."""
    grad_accum: int = Field(default=1, ge=1)
    """Micro-batches per optimizer step."""
    max_steps: int = Field(default=100, ge=1)
    """Optimizer steps (the cosine schedule spans them)."""
    lr: float = Field(default=3e-3, gt=0)
    """Peak learning rate."""
    min_lr: float = Field(default=3e-4, ge=0)
    """Learning rate at the end of the cosine."""
    warmup_steps: int = Field(default=10, ge=0)
    """Linear warm-up steps."""
    weight_decay: float = Field(default=0.1, ge=0)
    """AdamW weight decay (on matrices only)."""
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = Field(default=1.0, ge=0)
    """Global grad-norm clip (0 = off)."""
    seed: int = 0
    """Seed of the initial weights and the data order."""
    ckpt_every: int = Field(default=0, ge=0)
    """Checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept on disk."""
    log_every: int = Field(default=1, ge=1)
    """Log every N steps."""
    spike_factor: float = Field(default=1.5, gt=1)
    """A loss spike is a step whose loss exceeds spike_factor x the running EMA of the loss."""
    device: str = "auto"
    """auto (cuda if available), cpu or cuda."""
    bf16: bool = True
    """bf16 autocast (CUDA only; ignored on CPU)."""
    gpu_peak_tflops: float | None = None
    """Peak dense bf16 TFLOP/s of the GPU for MFU (auto for H100/H200/A100 when None)."""
    plots: bool = True
    """Write PNG plots at the end."""
    strategy: StrategyKind = "ddp"
    """Under torchrun: ddp (replicated weights) or fsdp (FSDP2 fully_shard per block, then the root)."""


class TokenizerConfig(_Strict):
    """Either train a byte-level BPE on the corpus or load tokenizer.json from a local directory."""

    path: Path | None = None
    """Directory (or file) holding tokenizer.json; when None a BPE is trained."""
    vocab_size: int = Field(default=512, ge=260)
    """Vocabulary size of a trained BPE (256 bytes + merges + specials)."""


class DataConfig(_Strict):
    """Where the text comes from: a folder of text files or a text dataset version of the store."""

    corpus: Path | None = None
    """A folder of text files (read recursively, sorted) or one text file."""
    dataset: str | None = None
    """A text dataset version registered in the store, ``NAME@version`` (items' text, ordered by key)."""
    glob: str = "**/*"
    """Which files under the folder."""
    max_bytes: int | None = Field(default=None, ge=1)
    """Stop reading the corpus after this many bytes (None = all)."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if (self.corpus is None) == (self.dataset is None):
            raise ValueError("give exactly one of corpus (a folder) or dataset (NAME@version)")
        return self


class RunConfig(_Strict):
    """One pretraining run: what ``modelfab pretrain --config FILE`` reads."""

    name: str = Field(default="l0", min_length=1)
    """Name the result is registered under."""
    out_dir: Path = Path("runs/pretrain")
    """Checkpoints, logs, shards and plots."""
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def validation_to_config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    """The first pydantic error as a ConfigError naming the field path (``model.moe.top_k: ...``)."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    return ConfigError(f"{path or '<root>'}: {err['msg']}")


def parse_run_config(raw: Any) -> RunConfig:
    """Validate a mapping (e.g. parsed YAML) into a RunConfig, raising ConfigError on any problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"<root>: expected a mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise validation_to_config_error(exc) from None


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config; relative paths resolve against the file's folder."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    cfg = parse_run_config(raw)
    base = path.resolve().parent
    data = cfg.data
    tok = data.tokenizer
    updates: dict[str, Any] = {"corpus": _resolve(base, data.corpus) if data.corpus is not None else None}
    if tok.path is not None:
        updates["tokenizer"] = tok.model_copy(update={"path": _resolve(base, tok.path)})
    return cfg.model_copy(update={"out_dir": _resolve(base, cfg.out_dir), "data": data.model_copy(update=updates)})


def _resolve(base: Path, p: Path) -> Path:
    p = p.expanduser()
    return p if p.is_absolute() else base / p
