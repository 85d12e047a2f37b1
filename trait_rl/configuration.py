"""Validation of a whole run configuration, before anything is compiled or written.

Every check names the dotted field and repeats the bad value, so a typo on the command line
(`--config.rl.group_size=0`) fails at once with a message that names what to change.
"""

import math
from collections.abc import Sequence

import ml_collections

from trait_rl import TRAITS
from trait_rl.data.tokenizer import MIN_VOCAB_SIZE

ALGORITHMS = ("grpo", "ppo")
# Choices of model.matmul_dtype and rl.rollout_matmul_dtype. "" keeps the dtype each defaults to.
MATMUL_DTYPES = ("", "float32", "bfloat16", "float16")
KL_ESTIMATORS = ("k1", "k3")
KL_MODES = ("loss", "reward")
REWARD_SOURCES = ("model", "oracle")
NORMALIZATIONS = ("batch", "running", "none")
BASE_ARMS = ("trait_rl", "conventional", "oracle_reward")
LOGICAL_AXES = (
    "batch", "vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers", "length",
    "outputs",
)  # fmt: skip
MESH_AXES = ("data", "fsdp", "tensor")
RL_POSITIVE_INTS = (
    "steps", "prompts_per_step", "group_size", "max_new_tokens", "log_every", "checkpoint_every",
    "max_to_keep", "ppo_epochs", "ppo_minibatches", "kl_horizon",
)  # fmt: skip
RL_NON_NEGATIVE = (
    "temperature", "learning_rate", "warmup_steps", "grad_clip_norm", "weight_decay", "clip_eps",
    "kl_coef", "kl_target", "task_reward", "malformed_penalty", "missing_stop_penalty", "std_floor",
    "vf_coef", "value_clip", "lagrangian_lr", "top_k",
)  # fmt: skip


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field and the value."""


def _fail(field: str, value, expected: str) -> None:
    raise ConfigError(f"invalid config value {field}={value!r}: expected {expected}")


def _positive_int(config, field: str) -> None:
    value = _get(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        _fail(field, value, "a positive integer")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _non_negative(config, field: str) -> None:
    value = _get(config, field)
    if not _is_number(value) or value < 0:
        _fail(field, value, "a finite number >= 0")


def _positive(config, field: str) -> None:
    value = _get(config, field)
    if not _is_number(value) or value <= 0:
        _fail(field, value, "a finite number > 0")


def _fraction(config, field: str) -> None:
    value = _get(config, field)
    if not _is_number(value) or not 0 <= value <= 1:
        _fail(field, value, "a number in [0, 1]")


def _boolean(config, field: str) -> None:
    value = _get(config, field)
    if not isinstance(value, bool):
        _fail(field, value, "True or False")


def _one_of(config, field: str, choices: Sequence[str]) -> None:
    value = _get(config, field)
    if value not in choices:
        _fail(field, value, f"one of {list(choices)}")


def _get(config, field: str):
    node = config
    for part in field.split("."):
        if part not in node:
            raise ConfigError(f"missing config field {field}; start from configs/default.py")
        node = node[part]
    return node


def validate_arm(field: str, arm: str) -> None:
    """Check one arm name: trait_rl, conventional, oracle_reward or single_trait:<trait>."""
    if arm in BASE_ARMS:
        return
    if isinstance(arm, str) and arm.startswith("single_trait:") and arm.split(":", 1)[1] in TRAITS:
        return
    choices = [*BASE_ARMS, *(f"single_trait:{trait}" for trait in TRAITS)]
    _fail(field, arm, f"one of {choices}")


def validate_model(config) -> None:
    for field in ("num_layers", "embed_dim", "num_heads", "num_kv_heads", "mlp_dim", "max_len"):
        _positive_int(config, f"model.{field}")
    _non_negative(config, "model.vocab_size")
    _non_negative(config, "model.head_dim")
    model = config.model
    if model.embed_dim % model.num_heads and not model.head_dim:
        _fail("model.num_heads", model.num_heads, f"a divisor of model.embed_dim={model.embed_dim}")
    if model.num_heads % model.num_kv_heads:
        _fail(
            "model.num_kv_heads",
            model.num_kv_heads,
            f"a divisor of model.num_heads={model.num_heads}",
        )
    _one_of(config, "model.param_dtype", ("float32", "bfloat16", "float16"))
    _one_of(config, "model.dtype", ("float32", "bfloat16", "float16"))
    _one_of(config, "model.matmul_dtype", MATMUL_DTYPES)
    _one_of(config, "model.position_embedding", ("rope", "learned"))
    _one_of(config, "model.norm", ("rmsnorm", "layernorm"))
    _one_of(config, "model.mlp_activation", ("swiglu", "geglu", "gelu"))
    _one_of(config, "model.remat", ("none", "dots", "full"))
    for field in ("model.qkv_bias", "model.embed_scale"):
        _boolean(config, field)


def validate_mesh(config, device_count: int | None) -> None:
    sizes = {}
    for axis in MESH_AXES:
        value = _get(config, f"mesh.{axis}")
        if isinstance(value, bool) or not isinstance(value, int) or (value <= 0 and value != -1):
            _fail(f"mesh.{axis}", value, "a positive integer or -1 (the remaining devices)")
        sizes[axis] = value
    if list(sizes.values()).count(-1) > 1:
        _fail("mesh", sizes, "at most one axis set to -1")
    for logical, mesh_axis in config.mesh.rules:
        if logical not in LOGICAL_AXES:
            _fail("mesh.rules", logical, f"a logical axis name in {list(LOGICAL_AXES)}")
        targets = mesh_axis if isinstance(mesh_axis, tuple | list) else (mesh_axis,)
        for target in targets:
            if target is not None and target not in MESH_AXES:
                _fail(f"mesh.rules[{logical}]", mesh_axis, f"mesh axes from {list(MESH_AXES)}")
    if device_count is None:
        return
    fixed = 1
    for value in sizes.values():
        fixed *= value if value != -1 else 1
    if -1 in sizes.values():
        if device_count % fixed:
            _fail("mesh", sizes, f"fixed axes whose product divides the {device_count} devices")
        return
    if fixed != device_count:
        expected = f"axis sizes whose product equals the {device_count} devices (or -1 on one axis)"
        _fail("mesh", sizes, expected)


def _mesh_sizes(config, device_count: int | None) -> dict[str, int] | None:
    if device_count is None:
        return None
    sizes = {axis: config.mesh[axis] for axis in MESH_AXES}
    fixed = 1
    for value in sizes.values():
        fixed *= value if value != -1 else 1
    return {a: (device_count // fixed if v == -1 else v) for a, v in sizes.items()}


def _data_parallel_size(config, device_count: int | None) -> int | None:
    sizes = _mesh_sizes(config, device_count)
    return None if sizes is None else sizes["data"] * sizes["fsdp"]


def validate_tensor_parallel(config, device_count: int | None) -> None:
    """Check that the tensor axis splits the attention heads and the MLP evenly."""
    sizes = _mesh_sizes(config, device_count)
    if sizes is None or sizes["tensor"] == 1:
        return
    tensor = sizes["tensor"]
    for field in ("num_heads", "num_kv_heads", "mlp_dim"):
        value = config.model[field]
        if value % tensor:
            _fail("mesh.tensor", tensor, f"a divisor of model.{field}={value}")


def validate_train(config, section: str, data_parallel: int | None) -> None:
    for field in ("steps", "batch_size", "seq_len", "log_every", "checkpoint_every", "max_to_keep"):
        _positive_int(config, f"{section}.{field}")
    for field in ("learning_rate", "warmup_steps", "weight_decay", "grad_clip_norm"):
        _non_negative(config, f"{section}.{field}")
    _fraction(config, f"{section}.end_learning_rate_fraction")
    for field in ("b1", "b2"):
        _fraction(config, f"{section}.{field}")
    if config[section].get("dtype", "") not in ("", "float32", "bfloat16", "float16"):
        _fail(f"{section}.dtype", config[section].dtype, "'', 'float32', 'bfloat16' or 'float16'")
    batch = config[section].batch_size
    if data_parallel and batch % data_parallel:
        _fail(
            f"{section}.batch_size", batch, f"a multiple of the data-parallel size {data_parallel}"
        )
    if config[section].seq_len > config.model.max_len:
        _fail(
            f"{section}.seq_len",
            config[section].seq_len,
            f"<= model.max_len={config.model.max_len}",
        )


def validate_rl(config, data_parallel: int | None) -> None:
    _one_of(config, "rl.algorithm", ALGORITHMS)
    for field in RL_POSITIVE_INTS:
        _positive_int(config, f"rl.{field}")
    if config.rl.group_size < 2:
        # A group of one has no other completion to compare with: its advantage is always 0.
        _fail("rl.group_size", config.rl.group_size, "an integer >= 2")
    for field in RL_NON_NEGATIVE:
        _non_negative(config, f"rl.{field}")
    # Sampling divides the logits by the temperature, and top_p = 0 keeps no token.
    _positive(config, "rl.temperature")
    _positive(config, "rl.top_p")
    for field in ("top_p", "trait_mix", "gamma", "gae_lambda"):
        _fraction(config, f"rl.{field}")
    _one_of(config, "rl.rollout_matmul_dtype", MATMUL_DTYPES)
    _one_of(config, "rl.kl_estimator", KL_ESTIMATORS)
    _one_of(config, "rl.kl_mode", KL_MODES)
    _one_of(config, "rl.reward_source", REWARD_SOURCES)
    _one_of(config, "rl.reward_normalization", NORMALIZATIONS)
    for trait, weight in config.rl.trait_weights.items():
        if trait not in TRAITS:
            _fail(f"rl.trait_weights.{trait}", weight, f"trait names from {list(TRAITS)}")
        _non_negative(config, f"rl.trait_weights.{trait}")
    if config.rl.lagrangian_trait not in ("", *TRAITS):
        _fail("rl.lagrangian_trait", config.rl.lagrangian_trait, f"'' or one of {list(TRAITS)}")
    rollouts = config.rl.prompts_per_step * config.rl.group_size
    if data_parallel and rollouts % data_parallel:
        expected = (
            f"prompts_per_step * group_size = {rollouts} divisible by {data_parallel} devices"
        )
        _fail("rl.prompts_per_step", config.rl.prompts_per_step, expected)
    if rollouts % config.rl.ppo_minibatches:
        _fail("rl.ppo_minibatches", config.rl.ppo_minibatches, f"a divisor of {rollouts} rollouts")


def validate_eval(config) -> None:
    for field in ("max_new_tokens", "batch_size", "ece_bins", "bootstrap_samples",
                  "attack_batch_size"):  # fmt: skip
        _positive_int(config, f"eval.{field}")
    _non_negative(config, "eval.max_prompts_per_split")
    _non_negative(config, "eval.attack_learning_rate")
    steps = list(config.eval.attack_steps)
    if not steps or any(not isinstance(s, int) or s < 0 for s in steps) or steps != sorted(steps):
        _fail("eval.attack_steps", tuple(steps), "a non-empty increasing list of step counts >= 0")


def validate_data(config) -> None:
    _positive_int(config, "data.num_entities")
    _positive_int(config, "data.vocab_size")
    if config.data.vocab_size < MIN_VOCAB_SIZE:
        _fail(
            "data.vocab_size",
            config.data.vocab_size,
            f">= {MIN_VOCAB_SIZE} (256 byte pieces, special tokens and role markers)",
        )
    _fraction(config, "data.unseen_entity_fraction")
    _fraction(config, "data.contested_fraction")
    _fraction(config, "data.trait_mix")
    exposures = list(config.data.exposures)
    if not exposures or any(not isinstance(e, int) or e < 0 for e in exposures):
        _fail("data.exposures", tuple(exposures), "a non-empty list of mention counts >= 0")


def validate(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Check every field of a run configuration; raise ConfigError naming the first bad one.

    Pass `device_count` (for example `jax.device_count()`) to also check the mesh and that the
    batch sizes divide the data-parallel size.
    """
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        _fail("seed", config.seed, "an integer >= 0")
    validate_arm("arm", config.arm)
    for index, arm in enumerate(config.arms):
        validate_arm(f"arms[{index}]", arm)
    validate_model(config)
    validate_mesh(config, device_count)
    validate_tensor_parallel(config, device_count)
    data_parallel = _data_parallel_size(config, device_count)
    validate_data(config)
    for section in ("sft", "conventional", "reward"):
        validate_train(config, section, data_parallel)
    validate_rl(config, data_parallel)
    validate_eval(config)
    prompt_budget = config.model.max_len - config.rl.max_new_tokens
    if prompt_budget < 16:
        _fail(
            "rl.max_new_tokens",
            config.rl.max_new_tokens,
            f"<= model.max_len - 16 = {config.model.max_len - 16}",
        )
