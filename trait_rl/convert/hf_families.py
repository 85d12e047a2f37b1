"""Map Hugging Face GPT-2, Llama-family and Gemma checkpoints onto `ModelConfig` and `init_params`.

Target layout (see `trait_rl.model.transformer.init_params`): layer weights are stacked on a
leading L axis. Attention kernels are q D x H x K, k and v D x G x K, o H x K x D. MLP kernels are
up and gate D x F, down F x D, and an untied LM head is D x V.

Source layouts: torch `nn.Linear` stores weight as out x in, so Llama-family kernels are
transposed. GPT-2's `Conv1D` stores in x out, and its q, k and v are one fused `c_attn` matrix.
Llama-family q/k weights in Hugging Face checkpoints are already ordered for the rotate-half rotary
convention that this model uses, so no permutation is needed. Gemma is a Llama-family layout whose
RMSNorm multiplies by (1 + weight); the conversion stores 1 + weight as the model's norm scale.
"""

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from trait_rl.model.config import ModelConfig

SUPPORTED_MODEL_TYPES = ("gpt2", "llama", "mistral", "qwen2", "gemma")
# Activations that equal the model's tanh-approximated GELU exactly.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh")
# Non-parameter buffers that some checkpoints store (causal masks, rotary tables).
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


class TensorStore:
    """Checkpoint tensors by name, recording which were used so leftovers can be reported."""

    def __init__(self, tensors: dict[str, np.ndarray], prefixes: tuple[str, ...], dtype):
        self._tensors = {_strip_prefix(name, prefixes): array for name, array in tensors.items()}
        self._used: set[str] = set()
        self._dtype = dtype

    def has(self, name: str) -> bool:
        return name in self._tensors

    def take(self, name: str, shape: tuple[int, ...], dtype=None) -> np.ndarray:
        """Return tensor `name`, checked against `shape`, in `dtype` (default: the target dtype)."""
        if name not in self._tensors:
            raise ValueError(f"checkpoint tensor {name} is missing")
        array = self._tensors[name]
        if tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"checkpoint tensor {name} has shape {tuple(array.shape)}, expected {tuple(shape)} "
                "from config.json; the weights and the config do not belong together"
            )
        self._used.add(name)
        return np.asarray(array).astype(dtype or self._dtype)

    @property
    def dtype(self):
        """Target dtype of the converted parameters."""
        return self._dtype

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, self._dtype)

    def unused(self) -> list[str]:
        names = set(self._tensors) - self._used
        return sorted(n for n in names if not n.endswith(_BUFFER_SUFFIXES))


def _strip_prefix(name: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


# ----------------------------------------------------------------------------- configs


def check_supported(hf_config: dict) -> None:
    """Raise NotImplementedError naming the model feature a checkpoint needs and the model lacks."""
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise NotImplementedError(
            f"model_type {model_type!r} in config.json is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if model_type == "gpt2":
        _check_gpt2(hf_config)
    elif model_type == "gemma":
        _check_gemma(hf_config)
        _check_rope(hf_config)
    else:
        _check_llama_family(hf_config)


def _check_gpt2(hf_config: dict) -> None:
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in _TANH_GELU:
        raise NotImplementedError(
            f"GPT-2 activation_function={activation!r}: the model only has tanh-approximated "
            f"GELU ({', '.join(_TANH_GELU)})"
        )
    if not hf_config.get("scale_attn_weights", True):
        raise NotImplementedError("GPT-2 scale_attn_weights=false: unscaled attention is missing")
    if hf_config.get("scale_attn_by_inverse_layer_idx", False):
        raise NotImplementedError(
            "GPT-2 scale_attn_by_inverse_layer_idx=true: per-layer attention scaling is missing"
        )


def _check_llama_family(hf_config: dict) -> None:
    activation = hf_config.get("hidden_act", "silu")
    if activation != "silu":
        raise NotImplementedError(
            f"hidden_act={activation!r}: the gated MLP of Llama-family models needs silu (SwiGLU)"
        )
    _check_rope(hf_config)
    window = hf_config.get("sliding_window")
    uses_window = hf_config.get("use_sliding_window", hf_config.get("model_type") == "mistral")
    if uses_window and window is not None:
        raise NotImplementedError(
            f"sliding_window={window}: sliding-window attention is missing from the model"
        )


def _gemma_activation(hf_config: dict) -> str:
    """Return the MLP activation of a Gemma config.json.

    transformers 5.25 runs the legacy `hidden_act="gelu"` of the original Gemma releases as
    tanh-approximated GELU, and so does this conversion.
    """
    # NOTE: `hidden_activation` (set in older Gemma config.json files) is taken over hidden_act,
    # as older transformers releases did. That precedence is not tested against them here.
    activation = hf_config.get("hidden_activation") or hf_config.get("hidden_act", "gelu")
    return "gelu_pytorch_tanh" if activation == "gelu" else activation


def _check_gemma(hf_config: dict) -> None:
    activation = _gemma_activation(hf_config)
    if activation not in _TANH_GELU:
        raise NotImplementedError(
            f"Gemma MLP activation {activation!r} (hidden_activation or hidden_act in "
            f"config.json): the model's geglu MLP only has tanh-approximated GELU "
            f"({', '.join(_TANH_GELU)})"
        )
    if hf_config.get("use_bidirectional_attention"):
        raise NotImplementedError(
            "Gemma use_bidirectional_attention=true: the model only has causal attention"
        )


def _check_rope(hf_config: dict) -> None:
    rope_type = _rope_parameters(hf_config).get("rope_type", "default")
    if rope_type != "default":
        raise NotImplementedError(
            f"rope scaling type {rope_type!r}: the model only has unscaled rotary embeddings"
        )
    if hf_config.get("partial_rotary_factor", 1.0) != 1.0:
        raise NotImplementedError("partial_rotary_factor != 1: partial rotary embeddings")


def _rope_parameters(hf_config: dict) -> dict:
    """Return rope settings from `rope_parameters` (transformers 5) or `rope_scaling` (older)."""
    params = dict(hf_config.get("rope_parameters") or {})
    scaling = hf_config.get("rope_scaling") or {}
    if "rope_type" not in params and scaling:
        params["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    params.setdefault("rope_theta", hf_config.get("rope_theta", 10_000.0))
    return params


def model_config_from_hf(
    hf_config: dict, param_dtype: str = "float32", dtype: str = "float32"
) -> ModelConfig:
    """Build the ModelConfig that reproduces a Hugging Face `config.json`."""
    check_supported(hf_config)
    if hf_config["model_type"] == "gpt2":
        return _gpt2_config(hf_config, param_dtype, dtype)
    if hf_config["model_type"] == "gemma":
        return _gemma_config(hf_config, param_dtype, dtype)
    return _llama_config(hf_config, param_dtype, dtype)


def _gpt2_config(hf_config: dict, param_dtype: str, dtype: str) -> ModelConfig:
    embed_dim = hf_config["n_embd"]
    return ModelConfig(
        vocab_size=hf_config["vocab_size"],
        num_layers=hf_config["n_layer"],
        embed_dim=embed_dim,
        num_heads=hf_config["n_head"],
        num_kv_heads=hf_config["n_head"],
        head_dim=embed_dim // hf_config["n_head"],
        mlp_dim=hf_config.get("n_inner") or 4 * embed_dim,
        max_len=hf_config["n_positions"],
        tie_embeddings=hf_config.get("tie_word_embeddings", True),
        param_dtype=param_dtype,
        dtype=dtype,
        norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
        position_embedding="learned",
        norm="layernorm",
        mlp_activation="gelu",
        use_bias=True,
    )


def _llama_config(hf_config: dict, param_dtype: str, dtype: str) -> ModelConfig:
    num_heads = hf_config["num_attention_heads"]
    head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // num_heads
    return ModelConfig(
        vocab_size=hf_config["vocab_size"],
        num_layers=hf_config["num_hidden_layers"],
        embed_dim=hf_config["hidden_size"],
        num_heads=num_heads,
        num_kv_heads=hf_config.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        mlp_dim=hf_config["intermediate_size"],
        max_len=hf_config["max_position_embeddings"],
        tie_embeddings=hf_config.get("tie_word_embeddings", False),
        param_dtype=param_dtype,
        dtype=dtype,
        rope_theta=float(_rope_parameters(hf_config)["rope_theta"]),
        norm_eps=hf_config.get("rms_norm_eps", 1e-6),
        position_embedding="rope",
        norm="rmsnorm",
        mlp_activation="swiglu",
        # Qwen2 always has q/k/v biases and no others. Llama's attention_bias also covers o, and
        # use_bias then adds MLP biases, which `_torch_linear` fills with zeros.
        qkv_bias=hf_config["model_type"] == "qwen2",
        use_bias=bool(hf_config.get("attention_bias") or hf_config.get("mlp_bias")),
    )


def _gemma_config(hf_config: dict, param_dtype: str, dtype: str) -> ModelConfig:
    """Return the config of a first-generation Gemma: Llama-family, GeGLU, scaled embeddings.

    A config.json without head_dim gets 256, the GemmaConfig default of transformers 5.25.
    """
    llama_like = {
        **hf_config,
        "head_dim": hf_config.get("head_dim", 256),
        "tie_word_embeddings": hf_config.get("tie_word_embeddings", True),
        "mlp_bias": False,
    }
    return dataclasses.replace(
        _llama_config(llama_like, param_dtype, dtype), mlp_activation="geglu", embed_scale=True
    )


# ----------------------------------------------------------------------------- weights


def params_from_hf(hf_config: dict, tensors: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """Return numpy parameters shaped like `init_params(rng, cfg)` from checkpoint tensors.

    Raises ValueError for a missing, misshapen or unused checkpoint tensor. An unused tensor means
    the checkpoint has weights (for example q/k norms) that the conversion would silently drop.
    """
    if hf_config["model_type"] == "gpt2":
        store = TensorStore(tensors, ("transformer.",), cfg.weight_dtype)
        params = _gpt2_params(store, cfg)
    else:
        store = TensorStore(tensors, ("model.",), cfg.weight_dtype)
        # Gemma's RMSNorm multiplies by (1 + weight), so its scales are stored with 1 added.
        scale_offset = 1.0 if hf_config["model_type"] == "gemma" else 0.0
        params = _llama_params(store, cfg, scale_offset)
    leftovers = store.unused()
    if leftovers:
        raise ValueError(
            f"checkpoint tensors not used by the conversion: {leftovers[:8]}; the model lacks "
            "the layers they belong to"
        )
    return params


def _stack_layers(cfg: ModelConfig, layer_fn: Callable[[int], dict]) -> dict:
    layers = [layer_fn(index) for index in range(cfg.num_layers)]
    return jax.tree.map(lambda *arrays: np.stack(arrays), *layers)


def _embeddings(store: TensorStore, cfg: ModelConfig, name: str, head_name: str) -> dict:
    params = {"embed": {"embedding": store.take(name, (cfg.vocab_size, cfg.embed_dim))}}
    if not cfg.tie_embeddings:
        head_VxD = store.take(head_name, (cfg.vocab_size, cfg.embed_dim))
        params["lm_head"] = {"kernel": np.ascontiguousarray(head_VxD.T)}
    elif store.has(head_name):
        # Tied checkpoints may still store the LM head as a copy of the embedding.
        store.take(head_name, (cfg.vocab_size, cfg.embed_dim))
    return params


def _torch_linear(
    store: TensorStore, name: str, in_dim: int, kernel_shape: tuple, bias_shape: tuple, bias: bool
) -> dict:
    """Convert an `nn.Linear` (weight out x in) to a kernel; absent biases become zeros."""
    out_dim = int(np.prod(kernel_shape)) // in_dim
    weight_OxI = store.take(f"{name}.weight", (out_dim, in_dim))
    dense = {"kernel": np.ascontiguousarray(weight_OxI.T).reshape(kernel_shape)}
    if bias:
        if store.has(f"{name}.bias"):
            dense["bias"] = store.take(f"{name}.bias", (out_dim,)).reshape(bias_shape)
        else:
            dense["bias"] = store.zeros(bias_shape)
    return dense


def _rms_norm(store: TensorStore, name: str, d: int, scale_offset: float) -> dict:
    """Return an RMSNorm scale, adding `scale_offset` in float32 before casting to the target."""
    weight_D = store.take(f"{name}.weight", (d,), np.float32)
    return {"scale": (weight_D + np.float32(scale_offset)).astype(store.dtype)}


def _llama_params(store: TensorStore, cfg: ModelConfig, scale_offset: float = 0.0) -> dict:
    d, h, g, k, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim

    def linear(name: str, projection: str, in_dim: int, kernel_shape: tuple, bias_shape: tuple):
        bias = cfg.has_bias(projection)
        return _torch_linear(store, name, in_dim, kernel_shape, bias_shape, bias)

    def layer(index: int) -> dict:
        prefix = f"layers.{index}."
        attn, mlp = prefix + "self_attn.", prefix + "mlp."
        return {
            "attn_norm": _rms_norm(store, prefix + "input_layernorm", d, scale_offset),
            "attn": {
                "q": linear(attn + "q_proj", "q", d, (d, h, k), (h, k)),
                "k": linear(attn + "k_proj", "k", d, (d, g, k), (g, k)),
                "v": linear(attn + "v_proj", "v", d, (d, g, k), (g, k)),
                "o": linear(attn + "o_proj", "o", h * k, (h, k, d), (d,)),
            },
            "mlp_norm": _rms_norm(store, prefix + "post_attention_layernorm", d, scale_offset),
            "mlp": {
                "gate": linear(mlp + "gate_proj", "gate", d, (d, f), (f,)),
                "up": linear(mlp + "up_proj", "up", d, (d, f), (f,)),
                "down": linear(mlp + "down_proj", "down", f, (f, d), (d,)),
            },
        }

    params = _embeddings(store, cfg, "embed_tokens.weight", "lm_head.weight")
    params["layers"] = _stack_layers(cfg, layer)
    params["final_norm"] = _rms_norm(store, "norm", d, scale_offset)
    return params


def _layer_norm(store: TensorStore, name: str, d: int) -> dict:
    return {"scale": store.take(f"{name}.weight", (d,)), "bias": store.take(f"{name}.bias", (d,))}


def _conv1d(store: TensorStore, name: str, in_dim: int, out_dim: int) -> tuple:
    """Return the weight (in x out) and bias of a GPT-2 `Conv1D`."""
    return store.take(f"{name}.weight", (in_dim, out_dim)), store.take(f"{name}.bias", (out_dim,))


def _gpt2_attention(store: TensorStore, prefix: str, cfg: ModelConfig) -> dict:
    d, h, k = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    fused_Dx3D, fused_bias_3D = _conv1d(store, prefix + "attn.c_attn", d, 3 * d)
    attention = {}
    for index, name in enumerate(("q", "k", "v")):
        columns = slice(index * d, (index + 1) * d)
        attention[name] = {
            "kernel": np.ascontiguousarray(fused_Dx3D[:, columns]).reshape(d, h, k),
            "bias": fused_bias_3D[columns].reshape(h, k),
        }
    out_DxD, out_bias_D = _conv1d(store, prefix + "attn.c_proj", d, d)
    attention["o"] = {"kernel": out_DxD.reshape(h, k, d), "bias": out_bias_D}
    return attention


def _gpt2_params(store: TensorStore, cfg: ModelConfig) -> dict:
    d, f = cfg.embed_dim, cfg.mlp_dim

    def layer(index: int) -> dict:
        prefix = f"h.{index}."
        up_DxF, up_bias_F = _conv1d(store, prefix + "mlp.c_fc", d, f)
        down_FxD, down_bias_D = _conv1d(store, prefix + "mlp.c_proj", f, d)
        return {
            "attn_norm": _layer_norm(store, prefix + "ln_1", d),
            "attn": _gpt2_attention(store, prefix, cfg),
            "mlp_norm": _layer_norm(store, prefix + "ln_2", d),
            "mlp": {
                "up": {"kernel": up_DxF, "bias": up_bias_F},
                "down": {"kernel": down_FxD, "bias": down_bias_D},
            },
        }

    params = _embeddings(store, cfg, "wte.weight", "lm_head.weight")
    params["pos_embed"] = {"embedding": store.take("wpe.weight", (cfg.max_len, d))}
    params["layers"] = _stack_layers(cfg, layer)
    params["final_norm"] = _layer_norm(store, "ln_f", d)
    return params
