"""Checkpoint reading, weight mapping and error messages of the Hugging Face import, without torch.

Checkpoints here are written with numpy in Hugging Face's tensor naming, from parameters in this
project's layout, so converting them back must return those parameters exactly. The last section
checks the model switches that the conversion relies on (embed_scale for Gemma, qkv_bias for
Qwen2).
"""

import dataclasses
import json
import struct

import jax
import jax.numpy as jnp
import ml_collections
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from configs import default
from trait_rl import configuration
from trait_rl.convert import hf_checkpoint, hf_families, safetensors_io
from trait_rl.data import hf_tokenizer
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig

LLAMA_CONFIG = {
    "model_type": "llama",
    "vocab_size": 40,
    "hidden_size": 16,
    "intermediate_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "bos_token_id": 1,
    "eos_token_id": [2, 3],
}


def random_params(cfg, seed=0) -> dict:
    """Parameters shaped like init_params, with random values everywhere (norm scales too)."""
    shapes = jax.eval_shape(lambda rng: transformer.init_params(rng, cfg), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)


def to_llama_tensors(params, cfg) -> dict[str, np.ndarray]:
    """Write params under Hugging Face Llama names, torch `nn.Linear` layout (out x in)."""
    d = cfg.embed_dim
    tensors = {
        "model.embed_tokens.weight": params["embed"]["embedding"],
        "model.norm.weight": params["final_norm"]["scale"],
        "lm_head.weight": params["lm_head"]["kernel"].T,
    }
    layers = params["layers"]
    for i in range(cfg.num_layers):
        prefix = f"model.layers.{i}."
        tensors[prefix + "input_layernorm.weight"] = layers["attn_norm"]["scale"][i]
        tensors[prefix + "post_attention_layernorm.weight"] = layers["mlp_norm"]["scale"][i]
        for name in ("q", "k", "v"):
            kernel = layers["attn"][name]["kernel"][i]
            tensors[f"{prefix}self_attn.{name}_proj.weight"] = kernel.reshape(d, -1).T
        o_kernel = layers["attn"]["o"]["kernel"][i]
        tensors[prefix + "self_attn.o_proj.weight"] = o_kernel.reshape(-1, d).T
        for name in ("gate", "up", "down"):
            tensors[f"{prefix}mlp.{name}_proj.weight"] = layers["mlp"][name]["kernel"][i].T
    return {name: np.ascontiguousarray(array) for name, array in tensors.items()}


def write_llama_dir(directory, hf_config=LLAMA_CONFIG, edit=None):
    """Write config.json and model.safetensors; `edit` may change the tensors before saving."""
    cfg = hf_families.model_config_from_hf(hf_config)
    params = random_params(cfg)
    tensors = to_llama_tensors(params, cfg)
    if edit:
        edit(tensors)
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config))
    save_file(tensors, str(directory / "model.safetensors"))
    return cfg, params


def write_wordlevel_tokenizer(directory, size=40) -> None:
    """A tokenizer.json whose eos token `</s>` is an added token with id 2."""
    vocab = {f"w{i}": i for i in range(size)}
    vocab["</s>"] = vocab.pop("w2")
    spec = {
        "version": "1.0",
        "added_tokens": [
            {
                "id": 2,
                "content": "</s>",
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        ],
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"},
        "pre_tokenizer": {"type": "Whitespace"},
    }
    (directory / "tokenizer.json").write_text(json.dumps(spec))


# ----------------------------------------------------------------------------- safetensors


def test_reader_matches_safetensors_package(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.normal(size=(3, 5)).astype(np.float32),
        "b": rng.integers(-9, 9, size=(7,)).astype(np.int64),
        "c": rng.normal(size=(2, 2, 2)).astype(np.float16),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"))
    ours = safetensors_io.read_safetensors(tmp_path / "x.safetensors")
    reference = load_file(str(tmp_path / "x.safetensors"))
    assert set(ours) == set(reference)
    for name, array in reference.items():
        assert ours[name].dtype == array.dtype
        np.testing.assert_array_equal(ours[name], array)


def test_reader_reads_bfloat16(tmp_path):
    values = np.array([[1.0, -2.5], [0.15625, 3e4]], ml_dtypes.bfloat16)
    data = values.tobytes()
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(data)]}}
    ).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    array = safetensors_io.read_safetensors(path)["w"]
    assert array.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(array.astype(np.float32), values.astype(np.float32))


def test_reader_rejects_bad_offsets(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(ValueError, match="tensor w with shape"):
        safetensors_io.read_safetensors(path)


def test_missing_weights_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        safetensors_io.read_checkpoint_tensors(tmp_path)


# ----------------------------------------------------------------------------- weight mapping


def test_llama_layout_round_trips(tmp_path):
    cfg, params = write_llama_dir(tmp_path)
    converted_cfg, converted = hf_checkpoint.convert_params(tmp_path)
    assert converted_cfg == cfg
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.norm_eps) == (2, 4, 5e5, 1e-5)
    assert not cfg.tie_embeddings
    jax.tree.map(np.testing.assert_array_equal, converted, params)


def test_sharded_index_round_trips(tmp_path):
    cfg, params = write_llama_dir(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    (tmp_path / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {"model-1.safetensors": names[::2], "model-2.safetensors": names[1::2]}
    weight_map = {}
    for shard, shard_names in shards.items():
        save_file({n: tensors[n] for n in shard_names}, str(tmp_path / shard))
        weight_map.update(dict.fromkeys(shard_names, shard))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _, converted = hf_checkpoint.convert_params(tmp_path)
    jax.tree.map(np.testing.assert_array_equal, converted, params)


def test_missing_tensor_named(tmp_path):
    write_llama_dir(tmp_path, edit=lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.up_proj\.weight is missing"):
        hf_checkpoint.convert_params(tmp_path)


def test_unused_tensor_named(tmp_path):
    def add_q_norm(tensors):
        tensors["model.layers.0.self_attn.q_norm.weight"] = np.ones(4, np.float32)

    write_llama_dir(tmp_path, edit=add_q_norm)
    with pytest.raises(ValueError, match=r"not used .*q_norm"):
        hf_checkpoint.convert_params(tmp_path)


def test_wrong_shape_named(tmp_path):
    config = {**LLAMA_CONFIG}
    write_llama_dir(tmp_path)
    config["intermediate_size"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"gate_proj\.weight has shape \(24, 16\), expected"):
        hf_checkpoint.convert_params(tmp_path)


def test_bias_free_tied_config():
    cfg = hf_families.model_config_from_hf({**LLAMA_CONFIG, "tie_word_embeddings": True})
    assert cfg.tie_embeddings and not cfg.use_bias


def test_qwen2_config_has_qkv_bias_only():
    qwen = hf_families.model_config_from_hf({**LLAMA_CONFIG, "model_type": "qwen2"})
    assert qwen.qkv_bias
    assert not qwen.use_bias
    assert [qwen.has_bias(p) for p in ("q", "k", "v", "o", "up")] == [True] * 3 + [False] * 2


def test_gemma_config_switches():
    gemma = {**LLAMA_CONFIG, "model_type": "gemma", "hidden_act": "gelu", "head_dim": 8}
    del gemma["tie_word_embeddings"]
    cfg = hf_families.model_config_from_hf(gemma)
    assert cfg.embed_scale
    assert cfg.mlp_activation == "geglu"
    assert cfg.tie_embeddings
    assert cfg.head_dim == 8
    assert not cfg.use_bias
    assert not cfg.qkv_bias
    del gemma["head_dim"]
    assert hf_families.model_config_from_hf(gemma).head_dim == 256


def test_gemma_norm_scales_get_one_added(tmp_path):
    gemma = {**LLAMA_CONFIG, "model_type": "gemma", "hidden_act": "gelu_pytorch_tanh"}
    cfg, params = write_llama_dir(tmp_path, gemma)
    converted_cfg, converted = hf_checkpoint.convert_params(tmp_path)
    assert converted_cfg == cfg
    for path in (("layers", "attn_norm"), ("layers", "mlp_norm"), ("final_norm",)):
        expected, actual = params, converted
        for key in path:
            expected, actual = expected[key], actual[key]
        np.testing.assert_allclose(actual["scale"], expected["scale"] + 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(
        converted["layers"]["attn"]["q"]["kernel"], params["layers"]["attn"]["q"]["kernel"]
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gemma", "hidden_activation": "silu"}, "activation 'silu'"),
        (
            {"model_type": "gemma", "hidden_act": "gelu", "use_bidirectional_attention": True},
            "bidirectional",
        ),
        ({"model_type": "phi3"}, "model_type 'phi3'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling type 'llama3'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "'yarn'"),
        ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
        ({"model_type": "mistral", "sliding_window": 4096}, "sliding_window=4096"),
        ({"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8}, "sliding"),
    ],
)
def test_unsupported_feature_named(change, message):
    with pytest.raises(NotImplementedError, match=message):
        hf_families.model_config_from_hf({**LLAMA_CONFIG, **change})


def test_gpt2_exact_gelu_unsupported():
    gpt2 = {"model_type": "gpt2", "activation_function": "gelu", "n_embd": 8}
    with pytest.raises(NotImplementedError, match="activation_function='gelu'"):
        hf_families.model_config_from_hf(gpt2)


# ----------------------------------------------------------------------------- output directory


def test_convert_writes_loadable_dir(tmp_path):
    source, output = tmp_path / "hf", tmp_path / "out"
    cfg, params = write_llama_dir(source)
    write_wordlevel_tokenizer(source)
    hf_checkpoint.convert_checkpoint(source, output)
    assert hf_checkpoint.load_model_config(output) == cfg
    restored = hf_checkpoint.restore_params(output, cfg)
    jax.tree.map(np.testing.assert_array_equal, restored, params)
    assert hf_tokenizer.resolve_special_ids(output) == (1, 2)
    with pytest.raises(FileExistsError, match="params exists"):
        hf_checkpoint.convert_checkpoint(source, output)


def test_convert_requires_tokenizer(tmp_path):
    write_llama_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        hf_checkpoint.convert_checkpoint(tmp_path, tmp_path / "out")


def test_load_model_config_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_hf_checkpoint.py"):
        hf_checkpoint.load_model_config(tmp_path)


# ----------------------------------------------------------------------------- special ids


def test_special_ids_from_tokenizer_config(tmp_path):
    write_wordlevel_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    assert hf_tokenizer.resolve_special_ids(tmp_path) == (2, 2)


def test_special_ids_vocab_token(tmp_path):
    write_wordlevel_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": {"content": "w7"}, "eos_token": "w9"})
    )
    assert hf_tokenizer.resolve_special_ids(tmp_path) == (7, 9)


def test_special_ids_missing_eos(tmp_path):
    write_wordlevel_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 1}))
    with pytest.raises(ValueError, match="no end-of-sequence token"):
        hf_tokenizer.resolve_special_ids(tmp_path)


def test_tokenizer_wraps_tokenizer_json(tmp_path):
    pytest.importorskip("tokenizers")
    write_wordlevel_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 2}))
    tokenizer = hf_tokenizer.HFTokenizer.load(tmp_path)
    assert tokenizer.encode("w5 w11 w5") == [5, 11, 5]
    assert tokenizer.decode([5, 11, 2]) == "w5 w11"
    assert (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id) == (0, 2, 2)
    assert tokenizer.vocab_size == 40


def test_tokenizer_rejects_out_of_vocab_eos(tmp_path):
    pytest.importorskip("tokenizers")
    write_wordlevel_tokenizer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 40}))
    with pytest.raises(ValueError, match="eos_id=40 is outside the vocabulary"):
        hf_tokenizer.HFTokenizer.load(tmp_path)


# ----------------------------------------------------------------------------- model switches

SWITCH_TINY = ModelConfig(
    vocab_size=40,
    num_layers=2,
    embed_dim=16,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=24,
    max_len=32,
)


def _switch_batch():
    tokens_BxT = np.random.default_rng(3).integers(1, SWITCH_TINY.vocab_size, size=(2, 7))
    input_mask_BxT = np.ones((2, 7), np.int32)
    input_mask_BxT[1, :3] = 0
    return jnp.asarray(tokens_BxT), jnp.asarray(input_mask_BxT)


def test_embed_scale_multiplies_inputs_only():
    scaled_cfg = dataclasses.replace(SWITCH_TINY, embed_scale=True, mlp_activation="geglu")
    params = random_params(scaled_cfg, seed=1)
    # The same network without the switch: a table pre-multiplied by sqrt(D) and an untied head
    # that keeps the unscaled table.
    plain_cfg = dataclasses.replace(scaled_cfg, embed_scale=False, tie_embeddings=False)
    table_VxD = params["embed"]["embedding"]
    plain = {
        **params,
        "embed": {"embedding": table_VxD * np.float32(np.sqrt(SWITCH_TINY.embed_dim))},
        "lm_head": {"kernel": np.ascontiguousarray(table_VxD.T)},
    }
    tokens_BxT, input_mask_BxT = _switch_batch()
    scaled_BxTxV, _ = transformer.forward(params, scaled_cfg, tokens_BxT, input_mask_BxT)
    plain_BxTxV, _ = transformer.forward(plain, plain_cfg, tokens_BxT, input_mask_BxT)
    unscaled_BxTxV, _ = transformer.forward(
        params, dataclasses.replace(scaled_cfg, embed_scale=False), tokens_BxT, input_mask_BxT
    )
    np.testing.assert_allclose(scaled_BxTxV, plain_BxTxV, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(scaled_BxTxV) - np.asarray(unscaled_BxTxV)).max() > 1e-2


def test_qkv_bias_params_and_axes():
    cfg = dataclasses.replace(SWITCH_TINY, qkv_bias=True)
    params = jax.eval_shape(lambda rng: transformer.init_params(rng, cfg), jax.random.key(0))
    axes = transformer.param_logical_axes(cfg)
    attn, mlp = params["layers"]["attn"], params["layers"]["mlp"]
    assert sorted(name for name in attn if "bias" in attn[name]) == ["k", "q", "v"]
    assert not any("bias" in mlp[name] for name in mlp)
    assert attn["q"]["bias"].shape == (2, 4, 8)
    assert attn["k"]["bias"].shape == (2, 2, 8)
    assert axes["layers"]["attn"]["k"]["bias"] == ("layers", "kv_heads", "head_dim")
    shapes = jax.tree.structure(params)
    assert jax.tree.structure(axes, is_leaf=lambda x: isinstance(x, tuple)) == shapes
    assert cfg.num_params == sum(a.size for a in jax.tree.leaves(params))
    assert cfg.num_params == SWITCH_TINY.num_params + 2 * (4 * 8 + 2 * 2 * 8)


def test_qkv_bias_equals_use_bias_with_zero_others():
    qkv_cfg = dataclasses.replace(SWITCH_TINY, qkv_bias=True)
    params = random_params(qkv_cfg, seed=2)
    all_cfg = dataclasses.replace(SWITCH_TINY, use_bias=True)
    all_params = jax.tree.map(np.zeros_like, random_params(all_cfg))
    for group in ("attn", "mlp"):
        for name, dense in all_params["layers"][group].items():
            dense["kernel"] = params["layers"][group][name]["kernel"]
            if name in ("q", "k", "v"):
                dense["bias"] = params["layers"][group][name]["bias"]
    for key in ("embed", "final_norm"):
        all_params[key] = params[key]
    all_params["layers"]["attn_norm"] = params["layers"]["attn_norm"]
    all_params["layers"]["mlp_norm"] = params["layers"]["mlp_norm"]
    tokens_BxT, input_mask_BxT = _switch_batch()
    qkv_BxTxV, _ = transformer.forward(params, qkv_cfg, tokens_BxT, input_mask_BxT)
    all_BxTxV, _ = transformer.forward(all_params, all_cfg, tokens_BxT, input_mask_BxT)
    np.testing.assert_allclose(qkv_BxTxV, all_BxTxV, rtol=1e-5, atol=1e-5)


def test_switches_read_from_config():
    config = default.get_config("tiny")
    assert not ModelConfig.from_config(config.model, vocab_size=40).embed_scale
    config.model.embed_scale = True
    config.model.qkv_bias = True
    cfg = ModelConfig.from_config(config.model, vocab_size=40)
    assert cfg.embed_scale
    assert cfg.qkv_bias
    configuration.validate_model(config)


@pytest.mark.parametrize("field", ["embed_scale", "qkv_bias"])
def test_switches_reject_non_bool(field):
    with pytest.raises(ValueError, match=f"model.{field}='yes'"):
        dataclasses.replace(SWITCH_TINY, **{field: "yes"})
    section = default.get_config("tiny").to_dict()
    section["model"][field] = "yes"
    with pytest.raises(configuration.ConfigError, match=f"model.{field}='yes'"):
        configuration.validate_model(ml_collections.ConfigDict(section))
