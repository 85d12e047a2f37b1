"""trait_rl: reinforcement learning of honesty, epistemic humility and corrigibility in JAX."""

TRAITS = ("honesty", "humility", "corrigibility")

__version__ = "0.1.0"
