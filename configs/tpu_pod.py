"""Multi-host TPU pod slice (for example v5e-64): a ~1B or ~3B model on an fsdp x tensor mesh.

Run the same command on every host of the slice:
  python scripts/run_pipeline.py --config=configs/tpu_pod.py:1b --workdir=gs://BUCKET/runs/pod_1b
The mesh is fsdp=16 x tensor=4 with the data axis taking the rest, so it needs a multiple of
64 chips: data=1 on v5e-64, data=4 on v5e-256. Every field not set here keeps its value from
configs/default.py.
"""

import pathlib

import ml_collections

from trait_rl import config_files

# Decoder shapes per variant: (num_layers, embed_dim, num_heads, num_kv_heads, mlp_dim). With the
# 32768-row tied embedding these give 1.04B and 2.92B parameters (checked in
# tests/test_configs.py). Key/value heads are a multiple of mesh.tensor so they shard evenly.
_SHAPES = {
    "1b": (16, 2048, 32, 8, 8192),
    "3b": (28, 3072, 24, 8, 8192),
}
_LEARNING_RATES = {"1b": 3e-4, "3b": 2e-4}  # Peak SFT learning rate per variant.


def _default_config() -> ml_collections.ConfigDict:
    """Return configs/default.py's config, the base this file overrides."""
    return config_files.load_config(pathlib.Path(__file__).with_name("default.py"))


def get_config(variant: str | None = "1b") -> ml_collections.ConfigDict:
    """Return the pod config; `variant` is "1b" (the default) or "3b"."""
    variant = variant or "1b"
    if variant not in _SHAPES:
        raise ValueError(
            f"unknown tpu_pod config variant {variant!r}; expected one of {list(_SHAPES)}"
        )
    config = _default_config()
    num_layers, embed_dim, num_heads, num_kv_heads, mlp_dim = _SHAPES[variant]
    learning_rate = _LEARNING_RATES[variant]

    config.multihost = True  # One process per host, joined by jax.distributed.initialize().

    model = config.model
    model.vocab_size = 32_768  # Padded above the tokenizer's size; divisible by mesh.tensor.
    model.num_layers = num_layers  # Depth of the variant.
    model.embed_dim = embed_dim  # Width of the variant; divisible by mesh.fsdp.
    model.num_heads = num_heads  # Query heads; divisible by mesh.tensor.
    model.num_kv_heads = num_kv_heads  # Grouped-query attention shrinks the KV cache for RL.
    model.mlp_dim = mlp_dim  # SwiGLU width; divisible by mesh.tensor.
    model.max_len = 1_024  # Room for long multi-turn conversations.
    model.dtype = "bfloat16"  # bf16 matmuls on the MXU; norms and logits stay float32.
    model.param_dtype = "float32"  # float32 master weights, sharded so memory stays small.

    mesh = config.mesh
    mesh.data = -1  # Pure data parallelism over whatever is left: 1 on v5e-64, 4 on v5e-256.
    mesh.fsdp = 16  # Weights and optimizer state sharded across 16 chips.
    mesh.tensor = 4  # Heads, MLP and vocabulary split across the 4 chips of one v5e host.

    config.data.vocab_size = 32_000  # Tokenizer size limit; model.vocab_size pads above it.
    config.data.num_entities = 10_000  # A world large enough that a 1B model cannot memorise it.

    for section in (config.sft, config.conventional, config.reward):
        section.batch_size = 256  # Global sequences per step; a multiple of data x fsdp.
        section.seq_len = 512  # Padded sequence length.
        section.log_every = 50  # Steps between logged metrics.
        section.checkpoint_every = 500  # Steps between periodic checkpoints (preemption safety).
    config.sft.steps = 20_000  # Passes over the large corpus.
    config.sft.warmup_steps = 1_000  # 5% linear warmup.
    config.sft.learning_rate = learning_rate  # Peak rate for this model size.
    config.conventional.steps = 2_000  # Rule SFT stays a short fine-tune.
    config.conventional.warmup_steps = 100  # 5% linear warmup.
    config.conventional.learning_rate = learning_rate / 10  # Fine-tune, not retrain.
    config.reward.steps = 4_000  # Reward model passes over the preference pairs.
    config.reward.warmup_steps = 200  # 5% linear warmup.
    config.reward.learning_rate = learning_rate / 2  # The head is new, the backbone is not.

    config.rl.steps = 1_000  # Policy updates.
    config.rl.prompts_per_step = 128  # 1024 rollouts per step with group_size 8.
    config.rl.max_new_tokens = 128  # Longer responses for the larger model.
    config.rl.learning_rate = 5e-6  # Small steps keep the policy near the reference.
    config.rl.warmup_steps = 50  # Linear warmup of the policy learning rate.
    config.rl.ppo_minibatches = 4  # 256 rollouts per PPO minibatch.
    config.rl.log_every = 10  # Steps between logged metrics.
    config.rl.checkpoint_every = 100  # Steps between periodic checkpoints.

    config.eval.max_new_tokens = 128  # Same completion length as in RL.
    config.eval.batch_size = 512  # Prompts per sampling call; a multiple of data x fsdp.
    config.eval.max_prompts_per_split = 0  # Evaluate every prompt of every split.
    config.eval.attack_batch_size = 64  # Malicious fine-tuning batch size; a multiple of 16.
    return config
