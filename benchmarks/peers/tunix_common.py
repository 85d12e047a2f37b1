"""Model, mesh and tokenizer for the Tunix peer scripts (run in the `tunix` venv only).

The model is Tunix's Llama3 at the reference shape with random weights: Tunix initialises the
MLP kernels at zero, so they are redrawn here, or the MLP would cost FLOPs but do nothing. The
mesh uses AxisType.Auto on both axes, because the default explicit axes raise a
ShardingTypeError at the embedding lookup on CPU.
"""

import jax
import numpy as np
import peer_common as pc
from flax import nnx
from jax.sharding import AxisType
from tunix.models.llama3 import model as llama3

# An end-of-sequence id outside the vocabulary can never be sampled, so every completion runs
# to exactly the requested number of new tokens.
UNREACHABLE_EOS = pc.VOCAB + 1


class WordTokenizer:
    """Word-level tokenizer over the peers' vocabulary `w0 .. w{VOCAB-1}`, with no BOS.

    Tunix accepts any object with these five methods. Pad is id 0, as in our library.
    """

    def encode(self, text: str, **_) -> list[int]:
        return [int(word[1:]) for word in text.split()]

    def decode(self, ids, **_) -> str:
        return " ".join(pc.word(int(i)) for i in ids if 0 <= int(i) < pc.VOCAB)

    def bos_id(self) -> int:
        return 0  # falsy, so the sampler prepends nothing

    def eos_id(self) -> int:
        return UNREACHABLE_EOS

    def pad_id(self) -> int:
        return 0


def model_config() -> llama3.ModelConfig:
    return llama3.ModelConfig(
        num_layers=pc.LAYERS,
        vocab_size=pc.VOCAB,
        embed_dim=pc.WIDTH,
        hidden_dim=pc.MLP,
        num_heads=pc.HEADS,
        head_dim=pc.WIDTH // pc.HEADS,
        num_kv_heads=pc.HEADS,
        rope_theta=500_000,
        norm_eps=1e-5,
        weight_tying=False,
    )


def make_mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((1, 1), ("fsdp", "tp"), axis_types=(AxisType.Auto,) * 2)


def redraw_mlp(model: llama3.Llama3, seed: int) -> None:
    """Replace the zero MLP kernels by LeCun-normal draws (std 1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            shape = proj.kernel.value.shape
            draw = rng.standard_normal(shape, dtype=np.float32) / np.sqrt(shape[0])
            proj.kernel.value = jax.numpy.asarray(draw)


def build_model(mesh: jax.sharding.Mesh, seed: int = 0) -> llama3.Llama3:
    with jax.set_mesh(mesh):
        model = llama3.Llama3(model_config(), rngs=nnx.Rngs(seed))
    redraw_mlp(model, seed)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    print(f"random Tunix Llama3 with {params:,} parameters")
    return model
