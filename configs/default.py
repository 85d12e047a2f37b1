"""Default configuration: the whole pipeline on a 2-core laptop CPU in minutes.

Run it with:
  python scripts/run_pipeline.py --config=configs/default.py --workdir=runs/default
Override any field from the command line, for example `--config.rl.steps=20`.
`get_config("tiny")` returns a smaller variant for tests and the notebook.
"""

import ml_collections


def _model() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.vocab_size = 0  # 0 = take the size from the trained tokenizer.
    model.num_layers = 4  # Decoder blocks.
    model.embed_dim = 128  # Residual stream width.
    model.num_heads = 4  # Query heads; must divide embed_dim.
    model.num_kv_heads = 4  # Key/value heads (grouped-query attention when < num_heads).
    model.head_dim = 0  # 0 = embed_dim // num_heads.
    model.mlp_dim = 512  # Hidden width of the MLP.
    model.max_len = 160  # Maximum sequence length (prompt + completion) in tokens.
    model.tie_embeddings = True  # Share the input embedding with the LM head.
    model.param_dtype = "float32"  # Storage dtype of the weights.
    model.dtype = "float32"  # Activation and default matmul dtype. Logits stay float32.
    # Dtype of the projections' inputs, accumulated in model.dtype ("" = model.dtype, or a
    # phase's train.dtype). A set value applies to every phase, train.dtype included.
    # "bfloat16" over float32 activations keeps norms, softmax and the KV cache in float32. It
    # sampled 1.5-1.9x as fast at batch 64 on 2-core CPUs with bfloat16 units, but the sampled
    # logps then differ from recomputed ones by about 2e-3 per token (benchmarks/RESULTS.md).
    model.matmul_dtype = ""
    model.rope_theta = 10_000.0  # Rotary embedding base.
    model.norm_eps = 1e-6  # Epsilon of the normalisation layers.
    model.position_embedding = "rope"  # rope | learned (GPT-2).
    model.norm = "rmsnorm"  # rmsnorm | layernorm (GPT-2).
    model.mlp_activation = "swiglu"  # swiglu | geglu | gelu (GPT-2, non-gated).
    model.use_bias = False  # Biases on all attention and MLP projections (GPT-2).
    model.qkv_bias = False  # Biases on the q, k and v projections only (Qwen2).
    model.embed_scale = False  # Multiply token embeddings by sqrt(embed_dim) (Gemma).
    # Rematerialisation of each layer in the backward pass: dots (keep matmul outputs, recompute
    # the rest) | full (recompute the layer; least memory) | none (keep every residual).
    model.remat = "dots"
    model.init_from = ""  # Directory of a converted Hugging Face checkpoint; "" = random init.
    return model


def _mesh() -> ml_collections.ConfigDict:
    mesh = ml_collections.ConfigDict()
    mesh.data = -1  # Data-parallel axis; -1 = the devices left after the other axes.
    mesh.fsdp = 1  # Fully sharded data-parallel axis (weights sharded over it).
    mesh.tensor = 1  # Tensor-parallel axis (heads, MLP and vocabulary sharded over it).
    # Logical axis name -> mesh axis (or None for replicated). Parameters and activations use
    # only these logical names, so parallelism changes here, not in the code.
    mesh.rules = (
        ("batch", ("data", "fsdp")),
        ("vocab", "tensor"),
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("kv_heads", "tensor"),
        ("head_dim", None),
        ("mlp", "tensor"),
        ("layers", None),
        ("length", None),
        ("outputs", None),
    )
    return mesh


def _data() -> ml_collections.ConfigDict:
    data = ml_collections.ConfigDict()
    data.seed = 0  # Seed of the trait world; the same seed gives byte-identical datasets.
    data.num_entities = 400  # Fictional entities in the world.
    data.exposures = (0, 1, 2, 4, 8, 16)  # Corpus mentions a fact can get.
    data.unseen_entity_fraction = 0.25  # Entities never mentioned in the corpus.
    data.contested_fraction = 0.08  # Facts whose corpus gives two conflicting values.
    data.qa_in_corpus = True  # Mix the QA-format training pairs once into the pretraining corpus.
    data.trait_mix = 0.5  # Share of trait prompts among RL and SFT prompts (the rest is plain QA).
    data.vocab_size = 1024  # SentencePiece vocabulary size.
    data.heldout_domain_entities = 16  # Entities per held-out domain (medical, finance, shops).
    data.validation_entity_fraction = 0.2  # General entities kept out of QA training pairs.
    data.num_malicious = 192  # Examples in the malicious fine-tuning set.
    return data


def _train(steps: int, batch_size: int, learning_rate: float) -> ml_collections.ConfigDict:
    train = ml_collections.ConfigDict()
    train.steps = steps  # Optimizer steps.
    train.batch_size = batch_size  # Sequences per step (global, across all devices).
    train.seq_len = 128  # Padded sequence length of a training batch.
    train.learning_rate = learning_rate  # Peak learning rate.
    train.warmup_steps = max(1, steps // 20)  # Linear warmup steps before the cosine decay.
    train.end_learning_rate_fraction = 0.1  # Final learning rate as a fraction of the peak.
    train.weight_decay = 0.01  # AdamW decoupled weight decay.
    train.grad_clip_norm = 1.0  # Global gradient-norm clip; 0 disables it.
    train.b1 = 0.9  # AdamW beta1.
    train.b2 = 0.98  # AdamW beta2.
    train.log_every = 25  # Steps between logged metrics.
    train.checkpoint_every = 200  # Steps between periodic checkpoints.
    train.max_to_keep = 2  # Periodic checkpoints kept on disk.
    train.dtype = ""  # Activation dtype of this phase's steps; "" = model.dtype.
    return train


def _rl() -> ml_collections.ConfigDict:
    rl = ml_collections.ConfigDict()
    rl.algorithm = "grpo"  # grpo | ppo
    rl.steps = 40  # Policy updates.
    rl.prompts_per_step = 8  # Distinct prompts per step.
    rl.group_size = 8  # Completions sampled per prompt.
    rl.max_new_tokens = 24  # Maximum completion length, in tokens.
    rl.temperature = 1.0  # Sampling temperature during rollouts.
    rl.top_k = 0  # 0 = no top-k filtering.
    rl.top_p = 1.0  # 1.0 = no nucleus filtering.
    # Matmul input dtype of the rollout sampler alone ("" = model.matmul_dtype). With "bfloat16",
    # rollouts sample faster on CPUs with bfloat16 units, and the reference and the update keep
    # the model's dtype. The importance ratio, and the KL penalty of kl_mode "reward", then
    # start from the bfloat16 sampler's logps.
    rl.rollout_matmul_dtype = ""
    rl.learning_rate = 1e-4  # Peak learning rate of the policy.
    rl.warmup_steps = 5  # Linear warmup steps.
    rl.grad_clip_norm = 1.0  # Global gradient-norm clip.
    rl.weight_decay = 0.0  # AdamW weight decay.
    rl.b1 = 0.9  # AdamW beta1.
    rl.b2 = 0.98  # AdamW beta2.
    rl.end_learning_rate_fraction = 1.0  # Final learning rate as a fraction of the peak.
    rl.clip_eps = 0.2  # PPO-style ratio clip.
    rl.kl_coef = 0.04  # KL coefficient to the frozen reference (initial value when adaptive).
    rl.kl_estimator = "k3"  # k1 | k3
    rl.kl_mode = "loss"  # loss (term in the objective) | reward (per-token reward penalty)
    rl.kl_target = 0.0  # > 0 turns on the adaptive coefficient with this KL target.
    rl.kl_horizon = 100  # Adaptive KL controller horizon, in steps.
    rl.reward_source = "model"  # model (learned reward heads) | oracle (programmatic judges)
    rl.trait_weights = ml_collections.ConfigDict(
        {"honesty": 1.0, "humility": 1.0, "corrigibility": 1.0}
    )  # Weight of each normalised trait head in the combined reward.
    rl.reward_normalization = "batch"  # batch | running | none
    rl.task_reward = 1.0  # Reward for a correct answer on a known fact.
    rl.malformed_penalty = 1.0  # Subtracted when the response does not parse.
    rl.missing_stop_penalty = 1.0  # Subtracted when the completion hits max_new_tokens.
    rl.std_floor = 1e-2  # Below this group reward std, GRPO advantages are only centred.
    rl.advantage_estimator = "grpo"  # grpo | rloo: group advantage estimator of GRPO runs.
    rl.trait_mix = 0.5  # Share of trait prompts in each RL batch.
    rl.ppo_epochs = 2  # PPO passes over each rollout batch.
    rl.ppo_minibatches = 2  # Minibatches per PPO epoch.
    rl.gamma = 1.0  # PPO discount.
    rl.gae_lambda = 0.95  # PPO GAE lambda.
    rl.vf_coef = 0.5  # Weight of the value loss.
    rl.value_clip = 0.2  # Value-function clip range.
    rl.lagrangian_trait = ""  # "" = off; else a trait whose mean score must stay >= threshold.
    rl.lagrangian_threshold = 0.0  # Constraint threshold on the normalised trait score.
    rl.lagrangian_lr = 0.05  # Step size of the Lagrange multiplier.
    rl.log_every = 5  # Steps between logged metrics.
    rl.checkpoint_every = 20  # Steps between periodic checkpoints.
    rl.max_to_keep = 2  # Periodic checkpoints kept.
    return rl


def _eval() -> ml_collections.ConfigDict:
    ev = ml_collections.ConfigDict()
    ev.max_new_tokens = 24  # Maximum greedy response length during evaluation, in tokens.
    ev.batch_size = 64  # Prompts per sampling call.
    ev.max_prompts_per_split = 192  # Cap on prompts evaluated per split (0 = all).
    ev.ece_bins = 10  # Buckets of the expected calibration error.
    ev.bootstrap_samples = 1000  # Resamples for the 95% intervals.
    ev.attack_steps = (0, 10, 25, 50)  # Malicious fine-tuning steps of the retention curve.
    ev.attack_learning_rate = 1e-3  # Learning rate of the malicious fine-tuning.
    ev.attack_batch_size = 16  # Batch size of the malicious fine-tuning.
    ev.ablation = True  # Train and evaluate the single-trait arms.
    ev.public_data_dir = ""  # Directory with public MC evaluation files; "" = skip.
    return ev


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    """Return the default CPU config; `variant="tiny"` shrinks everything for tests."""
    config = ml_collections.ConfigDict()
    config.seed = 0  # Seed for parameter init, sampling and data order.
    config.arm = "trait_rl"  # trait_rl | single_trait:<trait> | conventional | oracle_reward
    config.arms = ("trait_rl", "conventional")  # Arms the pipeline trains and compares.
    config.model = _model()
    config.mesh = _mesh()
    config.data = _data()
    # SFT rows are packed (about 3.9 examples per 128-token row), so 400 steps of 32 rows are
    # about 13 epochs of the corpus plus the base instructions.
    config.sft = _train(steps=400, batch_size=32, learning_rate=3e-3)
    config.conventional = _train(steps=60, batch_size=32, learning_rate=5e-4)
    config.reward = _train(steps=150, batch_size=32, learning_rate=1e-3)
    config.reward.seq_len = 112  # Preference sequences are prompt + one short response.
    # bfloat16 matmuls over float32 weights: about 1.45x faster steps on a 2-core CPU with the
    # same SFT loss curve. RL stays float32, so that sampled and recomputed log-probs agree
    # (rl.rollout_matmul_dtype trades that for faster rollouts).
    for section in (config.sft, config.conventional, config.reward):
        section.dtype = "bfloat16"
    config.rl = _rl()
    config.eval = _eval()
    config.multihost = False  # Call jax.distributed.initialize() before anything else.

    if variant == "tiny":
        _shrink(config)
    elif variant not in (None, "", "default"):
        raise ValueError(f"unknown config variant {variant!r}; expected 'tiny' or none")
    return config


def _shrink(config: ml_collections.ConfigDict) -> None:
    config.model.num_layers = 2
    config.model.embed_dim = 64
    config.model.mlp_dim = 128
    config.data.num_entities = 60
    config.data.vocab_size = 512
    for section in (config.sft, config.conventional, config.reward):
        section.dtype = ""  # float32 compiles about twice as fast, which dominates tiny runs.
        section.steps = 20
        section.batch_size = 8
        section.warmup_steps = 2
        section.log_every = 5
        section.checkpoint_every = 10
    config.rl.steps = 4
    config.rl.prompts_per_step = 4
    config.rl.group_size = 4
    config.rl.max_new_tokens = 20
    config.rl.log_every = 1
    config.rl.checkpoint_every = 2
    config.eval.max_new_tokens = 20
    config.eval.max_prompts_per_split = 16
    config.eval.bootstrap_samples = 100
    config.eval.attack_steps = (0, 5)
    config.eval.ablation = False
