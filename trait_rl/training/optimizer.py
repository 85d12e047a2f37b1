"""AdamW with linear warmup, cosine decay and global-norm clipping, built from a train section.

A train section is one of `config.sft`, `config.conventional` or `config.reward` (fields: steps,
learning_rate, warmup_steps, end_learning_rate_fraction, weight_decay, grad_clip_norm, b1, b2).
"""

import jax
import ml_collections
import optax

# Parameters whose path contains one of these names are scales and offsets, not projections.
# Decaying them towards zero would fight the normalisation, so weight decay skips them.
_NO_DECAY_NAMES = ("norm", "bias", "scale")


def _check_section(train_config: ml_collections.ConfigDict, section: str) -> None:
    checks = (
        ("steps", train_config.steps >= 1, "an integer >= 1"),
        ("learning_rate", train_config.learning_rate > 0, "> 0"),
        ("warmup_steps", 0 <= train_config.warmup_steps <= train_config.steps, "in [0, steps]"),
        (
            "end_learning_rate_fraction",
            0 <= train_config.end_learning_rate_fraction <= 1,
            "in [0, 1]",
        ),
        ("weight_decay", train_config.weight_decay >= 0, ">= 0"),
        ("grad_clip_norm", train_config.grad_clip_norm >= 0, ">= 0 (0 disables clipping)"),
        ("b1", 0 <= train_config.b1 < 1, "in [0, 1)"),
        ("b2", 0 <= train_config.b2 < 1, "in [0, 1)"),
    )
    for field, ok, expected in checks:
        if not ok:
            value = train_config[field]
            raise ValueError(f"invalid {section}.{field}={value!r}; expected {expected}")


def make_schedule(train_config: ml_collections.ConfigDict) -> optax.Schedule:
    """Return the learning rate per step: 0 -> peak over warmup_steps, then cosine to the end."""
    peak = train_config.learning_rate
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=train_config.warmup_steps,
        decay_steps=max(train_config.steps, train_config.warmup_steps + 1),
        end_value=peak * train_config.end_learning_rate_fraction,
    )


def _path_names(path) -> list[str]:
    names = []
    for entry in path:
        key = getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry)))
        names.append(str(key).lower())
    return names


def weight_decay_mask(params):
    """Return a pytree of bools over `params`: True where AdamW applies weight decay.

    Norm scales and biases are skipped by name, because with weights stacked over layers a norm
    scale is 2-D and its rank does not tell it apart from a projection. 1-D leaves are skipped too.
    """

    def decays(path, leaf) -> bool:
        names = _path_names(path)
        if any(marker in name for name in names for marker in _NO_DECAY_NAMES):
            return False
        return leaf.ndim >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(
    train_config: ml_collections.ConfigDict, section: str = "train"
) -> optax.GradientTransformation:
    """Build AdamW (decoupled weight decay, not on norms or biases) with warmup + cosine decay.

    `section` is the config section's name (`sft`, `reward`, ...) and only appears in errors.
    Gradients are clipped to `grad_clip_norm` by global norm before the update; 0 disables it.
    """
    _check_section(train_config, section)
    adamw = optax.adamw(
        learning_rate=make_schedule(train_config),
        b1=train_config.b1,
        b2=train_config.b2,
        weight_decay=train_config.weight_decay,
        mask=weight_decay_mask,
    )
    if train_config.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), adamw)
    return adamw
