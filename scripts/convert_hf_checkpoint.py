"""Convert a local Hugging Face GPT-2, Llama, Mistral, Qwen2 or Gemma checkpoint for this project.

  python scripts/convert_hf_checkpoint.py --source=path/to/hf_model --output=runs/hf/qwen2

The source directory is what `save_pretrained` writes: config.json, model.safetensors (or a
sharded model.safetensors.index.json) and tokenizer.json. Nothing is downloaded and no pickle
file is read. Start the pipeline from the result with `--config.model.init_from=runs/hf/qwen2`.
"""

from absl import app, flags

from trait_rl import cli
from trait_rl.convert import hf_checkpoint
from trait_rl.model.config import DTYPES

_SOURCE = flags.DEFINE_string(
    "source", None, "Hugging Face model directory written by save_pretrained.", required=True
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "New directory for the converted params, ModelConfig and tokenizer.",
    required=True,
)  # fmt: skip
_PARAM_DTYPE = flags.DEFINE_enum(
    "param_dtype", "float32", list(DTYPES), "Storage dtype of the converted weights."
)
_DTYPE = flags.DEFINE_enum(
    "dtype", "float32", list(DTYPES), "Activation dtype written into the ModelConfig."
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    model_cfg = hf_checkpoint.convert_checkpoint(
        _SOURCE.value, _OUTPUT.value, param_dtype=_PARAM_DTYPE.value, dtype=_DTYPE.value
    )
    print(
        f"wrote {_OUTPUT.value}: {model_cfg.num_params:,} parameters, {model_cfg.num_layers} "
        f"layers, embed_dim {model_cfg.embed_dim}, vocab {model_cfg.vocab_size}"
    )


if __name__ == "__main__":
    cli.run(main)
