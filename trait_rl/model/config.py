"""Model hyperparameters as a frozen, hashable dataclass, usable as a static `jax.jit` argument."""

import dataclasses
from typing import Any

import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
POSITION_EMBEDDINGS = ("rope", "learned")
NORMS = ("rmsnorm", "layernorm")
MLP_ACTIVATIONS = ("swiglu", "geglu", "gelu")
REMAT_POLICIES = ("none", "dots", "full")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of the decoder. configs/default.py documents each field."""

    vocab_size: int
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    max_len: int
    tie_embeddings: bool = True
    param_dtype: str = "float32"
    dtype: str = "float32"
    matmul_dtype: str = ""
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-6
    position_embedding: str = "rope"
    norm: str = "rmsnorm"
    mlp_activation: str = "swiglu"
    use_bias: bool = False
    embed_scale: bool = False
    qkv_bias: bool = False
    remat: str = "dots"

    def __post_init__(self):
        _check_positive(self, ("vocab_size", "num_layers", "embed_dim", "num_heads", "mlp_dim"))
        _check_positive(self, ("num_kv_heads", "max_len"))
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"invalid model.num_heads={self.num_heads}: it must divide "
                f"model.embed_dim={self.embed_dim}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"invalid model.num_kv_heads={self.num_kv_heads}: it must divide "
                f"model.num_heads={self.num_heads}"
            )
        if self.head_dim < 0:
            raise ValueError(f"invalid model.head_dim={self.head_dim}: use 0 or a positive size")
        if self.head_dim == 0:
            object.__setattr__(self, "head_dim", self.embed_dim // self.num_heads)
        if self.position_embedding == "rope" and self.head_dim % 2:
            raise ValueError(
                f"invalid model.head_dim={self.head_dim}: rotary embeddings need an even size"
            )
        _check_choice("param_dtype", self.param_dtype, tuple(DTYPES))
        _check_choice("dtype", self.dtype, tuple(DTYPES))
        _check_choice("matmul_dtype", self.matmul_dtype, ("", *DTYPES))
        _check_choice("position_embedding", self.position_embedding, POSITION_EMBEDDINGS)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("mlp_activation", self.mlp_activation, MLP_ACTIVATIONS)
        _check_choice("remat", self.remat, REMAT_POLICIES)
        if not self.rope_theta > 0:
            raise ValueError(f"invalid model.rope_theta={self.rope_theta}: it must be > 0")
        if not self.norm_eps > 0:
            raise ValueError(f"invalid model.norm_eps={self.norm_eps}: it must be > 0")

        for name in ("embed_scale", "qkv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"invalid model.{name}={getattr(self, name)!r}: expected True or False"
                )

    def has_bias(self, projection: str) -> bool:
        """Return whether a projection ("q", "k", "v", "o", "up", "gate", "down") has a bias.

        `use_bias` puts biases on every projection (GPT-2), `qkv_bias` on q, k and v only (Qwen2).
        """
        return self.use_bias or (self.qkv_bias and projection in ("q", "k", "v"))

    def with_activation_dtype(self, dtype: str) -> "ModelConfig":
        """Return this config computing in `dtype`; "" keeps the current activation dtype.

        Training phases use this to run their matmuls in bfloat16 over float32 weights, while
        RL keeps the model's dtype so that sampled and recomputed log-probs match, unless
        `rl.rollout_matmul_dtype` sets the sampler's. A set `matmul_dtype` still decides the
        projections' input dtype.
        """
        if not dtype:
            return self
        return dataclasses.replace(self, dtype=dtype)

    @property
    def activation_dtype(self) -> Any:
        """Dtype of activations, and of matmul inputs unless `matmul_dtype` is set."""
        return DTYPES[self.dtype]

    @property
    def matmul_input_dtype(self) -> Any:
        """Dtype that weights and activations are cast to for a projection, `dtype` by default.

        With `matmul_dtype` "bfloat16" over float32 activations, each projection multiplies
        bfloat16 inputs and accumulates in float32, while norms, softmax, the residual stream and
        the KV cache stay float32.
        """
        return DTYPES[self.matmul_dtype or self.dtype]

    @property
    def weight_dtype(self) -> Any:
        """Storage dtype of the parameters."""
        return DTYPES[self.param_dtype]

    @property
    def num_params(self) -> int:
        """Parameter count of `init_params(rng, self)`, computed from the shapes alone."""
        d, h, g, k, f = (
            self.embed_dim,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.mlp_dim,
        )
        bias = int(self.use_bias)
        qkv_bias = int(self.use_bias or self.qkv_bias)
        norm_size = d * (2 if self.norm == "layernorm" else 1)
        attention = d * h * k + 2 * d * g * k + h * k * d
        attention += qkv_bias * (h * k + 2 * g * k) + bias * d
        gated = self.mlp_activation in ("swiglu", "geglu")
        mlp_inputs = 2 if gated else 1
        mlp = (mlp_inputs + 1) * d * f + bias * (mlp_inputs * f + d)
        per_layer = attention + mlp + 2 * norm_size
        embeddings = self.vocab_size * d * (1 if self.tie_embeddings else 2)
        positions = self.max_len * d if self.position_embedding == "learned" else 0
        return self.num_layers * per_layer + embeddings + positions + norm_size

    @classmethod
    def from_config(cls, model_config: Any, vocab_size: int) -> "ModelConfig":
        """Build from the `config.model` section; `vocab_size` is the tokenizer's size.

        `model.vocab_size = 0` takes the tokenizer's size. A larger value pads the embedding
        table (for example to a multiple of the tensor-parallel axis); a smaller one is an error.
        """
        configured = int(model_config.vocab_size)
        if configured == 0:
            configured = vocab_size
        elif configured < vocab_size:
            raise ValueError(
                f"invalid model.vocab_size={configured}: the tokenizer has {vocab_size} tokens; "
                "set it to 0 or to at least the tokenizer's size"
            )
        # A field added after a config was saved (such as remat) takes its default.
        values = {}
        for field in dataclasses.fields(cls):
            if field.name == "vocab_size":
                continue
            if field.name in model_config:
                values[field.name] = model_config[field.name]
            elif field.default is dataclasses.MISSING:
                raise ValueError(
                    f"missing model.{field.name}: the model section must set it (see "
                    "configs/default.py)"
                )
        return cls(vocab_size=configured, **values)


def _check_positive(cfg: ModelConfig, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"invalid model.{name}={value!r}: it must be a positive integer")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"invalid model.{name}={value!r}: expected one of {listed}")
