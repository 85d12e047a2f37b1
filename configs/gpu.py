"""One H100/H200-class GPU: a ~125M or ~350M parameter model with bfloat16 activations.

Run it with:
  python scripts/run_pipeline.py --config=configs/gpu.py:125m --workdir=runs/gpu_125m
  python scripts/run_pipeline.py --config=configs/gpu.py:350m --workdir=runs/gpu_350m
Every field not set here keeps its value from configs/default.py.
"""

import pathlib

import ml_collections

from trait_rl import config_files

# Decoder shapes per variant: (num_layers, embed_dim, num_heads, mlp_dim). With the 32768-row
# tied embedding these give 124.3M and 341.9M parameters (checked in tests/test_configs.py).
_SHAPES = {
    "125m": (12, 768, 12, 2560),
    "350m": (24, 1024, 16, 2816),
}
# Per variant: SFT batch size and learning rate, RL learning rate. The larger model takes half
# the batch to fit the same activation memory, and smaller steps.
_TRAINING = {
    "125m": (128, 6e-4, 2e-5),
    "350m": (64, 3e-4, 1e-5),
}


def _default_config() -> ml_collections.ConfigDict:
    """Return configs/default.py's config, the base this file overrides."""
    return config_files.load_config(pathlib.Path(__file__).with_name("default.py"))


def get_config(variant: str | None = "125m") -> ml_collections.ConfigDict:
    """Return the single-GPU config; `variant` is "125m" (the default) or "350m"."""
    variant = variant or "125m"
    if variant not in _SHAPES:
        raise ValueError(f"unknown gpu config variant {variant!r}; expected one of {list(_SHAPES)}")
    config = _default_config()
    num_layers, embed_dim, num_heads, mlp_dim = _SHAPES[variant]
    batch_size, learning_rate, rl_learning_rate = _TRAINING[variant]

    model = config.model
    model.vocab_size = 32_768  # Fixed size, padded above the tokenizer's, a multiple of 128.
    model.num_layers = num_layers  # Depth of the variant.
    model.embed_dim = embed_dim  # Width of the variant.
    model.num_heads = num_heads  # Head size 64 in both variants.
    model.num_kv_heads = num_heads  # Full multi-head attention; the KV cache fits easily.
    model.mlp_dim = mlp_dim  # About 8/3 x embed_dim, the usual SwiGLU ratio, rounded up.
    model.max_len = 512  # Room for longer conversations than the CPU default's 160.
    model.dtype = "bfloat16"  # bf16 matmuls on tensor cores; norms and logits stay float32.
    model.param_dtype = "float32"  # float32 master weights for AdamW.

    config.mesh.data = -1  # Plain data parallelism over all local GPUs (one by default).

    config.data.vocab_size = 32_000  # Tokenizer size limit; model.vocab_size pads above it.
    config.data.num_entities = 2_000  # A larger world, so the bigger model does not memorise it.

    for section in (config.sft, config.conventional, config.reward):
        section.batch_size = batch_size  # Sequences per step for one GPU's memory.
        section.seq_len = 256  # Longer padded sequences than the CPU default's 128.
        section.log_every = 100  # Fewer, cheaper log lines at GPU step rates.
        section.checkpoint_every = 1_000  # A checkpoint every few minutes of GPU time.
    config.sft.steps = 10_000  # Enough passes over the larger corpus for the bigger model.
    config.sft.warmup_steps = 500  # 5% linear warmup.
    config.sft.learning_rate = learning_rate  # Peak rate for this model size.
    config.conventional.steps = 1_000  # Rule SFT stays a short fine-tune.
    config.conventional.warmup_steps = 50  # 5% linear warmup.
    config.conventional.learning_rate = learning_rate / 10  # Fine-tune, not retrain.
    config.reward.steps = 2_000  # Reward model passes over the preference pairs.
    config.reward.warmup_steps = 100  # 5% linear warmup.
    config.reward.learning_rate = learning_rate / 2  # The head is new, the backbone is not.

    config.rl.steps = 500  # Policy updates.
    config.rl.prompts_per_step = 64  # 512 rollouts per step with group_size 8.
    config.rl.max_new_tokens = 64  # Longer responses than the CPU default allows.
    config.rl.learning_rate = rl_learning_rate  # Small steps keep the policy near the reference.
    config.rl.warmup_steps = 20  # Linear warmup of the policy learning rate.
    config.rl.log_every = 10  # Steps between logged metrics.
    config.rl.checkpoint_every = 100  # Steps between periodic checkpoints.

    config.eval.max_new_tokens = 64  # Same completion length as in RL.
    config.eval.batch_size = 256  # Prompts per sampling call.
    config.eval.max_prompts_per_split = 0  # Evaluate every prompt of every split.
    config.eval.attack_batch_size = 32  # Malicious fine-tuning batch size.
    return config
