"""Converted Hugging Face checkpoints give the same logits as `transformers` on the same tokens.

Each test builds a tiny randomly initialised `transformers` model, saves it with
`save_pretrained(safe_serialization=True)`, converts it and compares float32 logits on a batch
with left padding. Needs the `[hf]` extra (CPU torch, transformers, tokenizers).
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from trait_rl.convert import hf_checkpoint, safetensors_io  # noqa: E402
from trait_rl.model import transformer  # noqa: E402

pytestmark = pytest.mark.hf

VOCAB_SIZE = 300
EOS_TOKEN = "<|endoftext|>"
TEXTS = ["the capital of Veloria is Marrow", "I am not sure.", "Pause now; I comply."] * 4
ATOL = 1e-4


def _llama_kwargs(**overrides) -> dict:
    kwargs = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return {**kwargs, **overrides}


def make_hf_config(family: str):
    if family == "gpt2":
        return transformers.GPT2Config(
            vocab_size=VOCAB_SIZE, n_positions=64, n_embd=32, n_layer=2, n_head=4
        )
    if family == "llama_gqa":
        return transformers.LlamaConfig(**_llama_kwargs())
    if family == "llama_mqa_bias_tied":
        return transformers.LlamaConfig(
            **_llama_kwargs(num_key_value_heads=1, attention_bias=True, mlp_bias=True),
            tie_word_embeddings=True,
        )
    if family == "qwen2":
        return transformers.Qwen2Config(**_llama_kwargs())
    if family == "mistral":
        return transformers.MistralConfig(**_llama_kwargs(sliding_window=None))
    if family == "gemma":
        return transformers.GemmaConfig(**_llama_kwargs(head_dim=16))
    raise ValueError(family)


def train_tokenizer(path) -> int:
    """Write a byte-level BPE tokenizer.json to `path`; return the id of its eos token."""
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(TEXTS, trainer)
    tokenizer.save(str(path))
    return tokenizer.token_to_id(EOS_TOKEN)


def save_random_model(family: str, directory, **save_kwargs):
    """Save a tiny model with every parameter (biases and norm scales too) randomised."""
    eos_id = train_tokenizer(directory / "tokenizer.json")
    config = make_hf_config(family)
    config.bos_token_id = config.eos_token_id = eos_id
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    model.eval()
    model.save_pretrained(directory, safe_serialization=True, **save_kwargs)
    return model


def left_padded_batch():
    rng = np.random.default_rng(0)
    tokens_BxT = rng.integers(0, VOCAB_SIZE, size=(3, 12))
    input_mask_BxT = np.ones((3, 12), np.int32)
    input_mask_BxT[1, :4] = 0
    input_mask_BxT[2, :9] = 0
    tokens_BxT = np.where(input_mask_BxT > 0, tokens_BxT, 0)
    return tokens_BxT, input_mask_BxT


def max_logit_diff(hf_model, converted_dir) -> float:
    """Return the max |logit difference| over real (unpadded) positions."""
    model_cfg, params, _ = hf_checkpoint.load_converted(converted_dir)
    tokens_BxT, input_mask_BxT = left_padded_batch()
    positions_BxT = np.asarray(transformer.positions_from_mask(jnp.asarray(input_mask_BxT)))
    with torch.no_grad():
        expected_BxTxV = hf_model(
            input_ids=torch.tensor(tokens_BxT),
            attention_mask=torch.tensor(input_mask_BxT),
            # transformers numbers positions from 0 at the first column, padding included.
            position_ids=torch.tensor(positions_BxT),
        ).logits.numpy()
    logits_BxTxV, _ = transformer.forward(
        params, model_cfg, jnp.asarray(tokens_BxT), jnp.asarray(input_mask_BxT)
    )
    assert logits_BxTxV.shape == expected_BxTxV.shape
    real = input_mask_BxT.astype(bool)
    return float(np.abs(np.asarray(logits_BxTxV)[real] - expected_BxTxV[real]).max())


FAMILIES = ["gpt2", "llama_gqa", "llama_mqa_bias_tied", "qwen2", "mistral", "gemma"]


@pytest.mark.parametrize("family", FAMILIES)
def test_converted_logits_match(family, tmp_path):
    source, output = tmp_path / "hf", tmp_path / "converted"
    source.mkdir()
    hf_model = save_random_model(family, source)
    hf_checkpoint.convert_checkpoint(source, output)
    assert max_logit_diff(hf_model, output) < ATOL


def test_sharded_checkpoint_matches(tmp_path):
    source, output = tmp_path / "hf", tmp_path / "converted"
    source.mkdir()
    hf_model = save_random_model("llama_gqa", source, max_shard_size="40KB")
    assert (source / safetensors_io.INDEX_FILE).is_file()
    assert not (source / safetensors_io.SINGLE_FILE).exists()
    hf_checkpoint.convert_checkpoint(source, output)
    assert max_logit_diff(hf_model, output) < ATOL


def test_bfloat16_checkpoint_converts(tmp_path):
    source, output = tmp_path / "hf", tmp_path / "converted"
    source.mkdir()
    hf_model = save_random_model("qwen2", source)
    hf_model.to(torch.bfloat16).save_pretrained(source, safe_serialization=True)
    model_cfg = hf_checkpoint.convert_checkpoint(source, output, param_dtype="bfloat16")
    assert model_cfg.param_dtype == "bfloat16"
    # Reload in float32 so both sides compute with the same bf16-rounded weights; casting the
    # model back with `.to` would keep its rotary frequency buffer rounded to bf16.
    reference = transformers.AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, attn_implementation="eager"
    )
    assert max_logit_diff(reference.eval(), output) < ATOL


def test_tokenizer_matches_transformers(tmp_path):
    source, output = tmp_path / "hf", tmp_path / "converted"
    source.mkdir()
    save_random_model("gpt2", source)
    hf_checkpoint.convert_checkpoint(source, output)
    _, _, tokenizer = hf_checkpoint.load_converted(output)
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"))
    eos_id = json.loads((source / "config.json").read_text())["eos_token_id"]
    text = "the capital of Veloria is unknown to me."
    assert tokenizer.encode(text) == reference.encode(text, add_special_tokens=False)
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode([*tokenizer.encode(text), tokenizer.eos_id]) == text
    assert tokenizer.eos_id == tokenizer.bos_id == eos_id
    assert tokenizer.vocab_size == VOCAB_SIZE
    assert tokenizer.pad_id == 0
