"""Sequence packing: first-fit decreasing rows, segment-aware attention, unchanged SFT loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.data import batching, tokenizer
from trait_rl.data.records import TextExample
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.training import sft

LLAMA_STYLE = ModelConfig(
    vocab_size=61,
    num_layers=2,
    embed_dim=32,
    num_heads=4,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=32,
)
GPT2_STYLE = dataclasses.replace(
    LLAMA_STYLE,
    num_kv_heads=4,
    tie_embeddings=False,
    position_embedding="learned",
    norm="layernorm",
    mlp_activation="gelu",
    use_bias=True,
)
ATOL = 1e-5
LENGTHS = (5, 7, 3)
ROW_LEN = 18  # 15 real tokens and 3 pads.
BOS = 1
FORWARD = jax.jit(transformer.forward, static_argnums=1)
SFT_LOSS = jax.jit(sft.sft_loss, static_argnums=1)

TEXTS = [
    "<|user|> Where is Karsh? <|assistant|> Karsh lies on the river Valo. Confidence: 90%",
    "<|user|> Who founded Brightwell? <|assistant|> I don't know.",
    "Mera Tolvan founded the company Brightwell in 1987.",
] * 40


def _examples_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Three right-padded examples `bos, prompt, targets` of LENGTHS tokens, padded to ROW_LEN."""
    rng = np.random.default_rng(seed)
    arrays = {name: np.zeros((len(LENGTHS), ROW_LEN), np.int32) for name in ("tokens", "loss_mask")}
    for row, length in enumerate(LENGTHS):
        arrays["tokens"][row, :length] = [BOS, *rng.integers(2, LLAMA_STYLE.vocab_size, length - 1)]
        arrays["loss_mask"][row, 2:length] = 1
    arrays["input_mask"] = (arrays["tokens"] > 0).astype(np.int32)
    return arrays


def _packed_row(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate the examples in order into one row [ex1 | ex2 | ex3 | pad]."""
    row = {
        name: np.zeros((1, ROW_LEN), np.int32) for name in ("tokens", "loss_mask", "segment_ids")
    }
    start = 0
    for index, length in enumerate(LENGTHS):
        row["tokens"][0, start : start + length] = arrays["tokens"][index, :length]
        row["loss_mask"][0, start : start + length] = arrays["loss_mask"][index, :length]
        row["segment_ids"][0, start : start + length] = index + 1
        start += length
    row["input_mask"] = (row["segment_ids"] > 0).astype(np.int32)
    return row


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "trait.model"
    return tokenizer.train_tokenizer(TEXTS, vocab_size=400, path=path)


# ----------------------------------------------------------------------------- model


def test_positions_restart_per_segment():
    segment_ids = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    positions = transformer.positions_from_segments(segment_ids)
    np.testing.assert_array_equal(positions, [[0, 1, 2, 0, 1, 0, 0, 1], [0, 1, 2, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize("cfg", [LLAMA_STYLE, GPT2_STYLE], ids=["llama_gqa", "gpt2"])
def test_packed_logits_equal_separate_runs(cfg):
    """Run each example alone in its own right-padded row, since right padding keeps its logits."""
    params = transformer.init_params(jax.random.key(0), cfg)
    arrays = _examples_arrays()
    row = _packed_row(arrays)
    packed_logits, _ = FORWARD(
        params, cfg, row["tokens"], row["input_mask"], segment_ids_BxT=row["segment_ids"]
    )
    alone_logits, _ = FORWARD(params, cfg, arrays["tokens"], arrays["input_mask"])
    start = 0
    for index, length in enumerate(LENGTHS):
        np.testing.assert_allclose(
            packed_logits[0, start : start + length], alone_logits[index, :length], atol=ATOL
        )
        start += length


def test_one_segment_per_row_matches_unpacked():
    params = transformer.init_params(jax.random.key(0), LLAMA_STYLE)
    arrays = _examples_arrays()
    plain, _ = FORWARD(params, LLAMA_STYLE, arrays["tokens"], arrays["input_mask"])
    segmented, _ = FORWARD(
        params,
        LLAMA_STYLE,
        arrays["tokens"],
        arrays["input_mask"],
        segment_ids_BxT=arrays["input_mask"],
    )
    mask = arrays["input_mask"][..., None] > 0
    np.testing.assert_allclose(np.where(mask, segmented, 0), np.where(mask, plain, 0), atol=ATOL)


def test_segments_with_cache_raise():
    params = transformer.init_params(jax.random.key(0), LLAMA_STYLE)
    tokens = jnp.ones((1, 4), jnp.int32)
    cache = transformer.init_cache(LLAMA_STYLE, 1, 8)
    with pytest.raises(ValueError, match="without a cache"):
        transformer.forward(
            params, LLAMA_STYLE, tokens, tokens, cache=cache, segment_ids_BxT=tokens
        )


# ----------------------------------------------------------------------------- SFT loss


def test_packed_sft_loss_equals_unpacked():
    params = transformer.init_params(jax.random.key(0), LLAMA_STYLE)
    arrays = _examples_arrays()
    unpacked_loss, unpacked_metrics = SFT_LOSS(
        params, LLAMA_STYLE, sft.SFTBatch.from_arrays(arrays)
    )
    packed_loss, packed_metrics = SFT_LOSS(
        params, LLAMA_STYLE, sft.SFTBatch.from_arrays(_packed_row(arrays))
    )
    assert float(packed_metrics["tokens"]) == sum(length - 2 for length in LENGTHS)
    assert float(packed_metrics["tokens"]) == float(unpacked_metrics["tokens"])
    assert float(packed_loss) == pytest.approx(float(unpacked_loss), abs=1e-5)
    assert float(packed_metrics["accuracy"]) == pytest.approx(
        float(unpacked_metrics["accuracy"]), abs=1e-6
    )


def test_loss_skips_targets_across_segments():
    """A loss-mask 1 on the first token of a segment must not be predicted from the previous one."""
    params = transformer.init_params(jax.random.key(0), LLAMA_STYLE)
    row = _packed_row(_examples_arrays())
    _, metrics = SFT_LOSS(params, LLAMA_STYLE, sft.SFTBatch.from_arrays(row))
    row["loss_mask"][0, LENGTHS[0]] = 1  # The bos of the second example.
    _, leaked = SFT_LOSS(params, LLAMA_STYLE, sft.SFTBatch.from_arrays(row))
    assert float(leaked["tokens"]) == float(metrics["tokens"])


def test_batch_without_segments_defaults_to_input_mask():
    arrays = _examples_arrays()
    batch = sft.SFTBatch.from_arrays(arrays)
    np.testing.assert_array_equal(batch.segment_ids, arrays["input_mask"])
    direct = sft.SFTBatch(arrays["tokens"], arrays["input_mask"], arrays["loss_mask"])
    np.testing.assert_array_equal(direct.segment_ids, arrays["input_mask"])
    packed = sft.SFTBatch.from_arrays(_packed_row(arrays))
    np.testing.assert_array_equal(packed.input_mask, packed.segment_ids > 0)


# ----------------------------------------------------------------------------- packing


def test_first_fit_decreasing_assignment():
    bins = batching.first_fit_decreasing([3, 7, 5, 5, 2, 8], capacity=10)
    assert bins == [[5, 4], [1, 0], [2, 3]]


def test_first_fit_decreasing_rejects_long_item():
    with pytest.raises(
        ValueError, match=r"item 1 has length 11, but item lengths must be in \[1, 10\]"
    ):
        batching.first_fit_decreasing([3, 11], capacity=10)


def test_pack_keeps_every_example_whole(tok):
    examples = [
        TextExample(
            prompt=TEXTS[i % 2].split(" <|assistant|>")[0],
            response=f"answer {i}",
            kind="qa",
            family="f",
            split="train",
        )
        for i in range(9)
    ] + [TextExample(prompt="", response=TEXTS[2], kind="corpus", family="", split="train")]
    seq_len = 40
    tokenized = batching.tokenize_examples(tok, examples, seq_len)
    packed = batching.pack_examples(tokenized, seq_len)

    assert set(packed) == {"tokens", "segment_ids", "loss_mask", "input_mask"}
    assert packed["tokens"].shape[1] == seq_len
    assert len(packed["tokens"]) < len(examples)
    expected = sorted(
        tuple(tokens[mask > 0])
        for tokens, mask in zip(tokenized["tokens"], tokenized["input_mask"], strict=True)
    )
    found = []
    for row in range(len(packed["tokens"])):
        segments = packed["segment_ids"][row]
        for segment in range(1, segments.max() + 1):
            columns = np.flatnonzero(segments == segment)
            assert np.all(np.diff(columns) == 1), "a segment must be contiguous"
            found.append(tuple(packed["tokens"][row, columns]))
        num_real = int(np.sum(segments > 0))
        assert np.all(segments[:num_real] > 0), "padding must only fill the end of a row"
    assert sorted(found) == expected
    assert packed["loss_mask"].sum() == tokenized["loss_mask"].sum()
    np.testing.assert_array_equal(packed["tokens"][packed["segment_ids"] == 0], 0)
    efficiency = batching.packing_efficiency(packed)
    assert efficiency == pytest.approx(tokenized["input_mask"].sum() / packed["tokens"].size)
    assert efficiency > tokenized["input_mask"].mean()


def test_pack_is_deterministic_and_accepts_lists(tok):
    examples = [
        TextExample(prompt="", response=t, kind="corpus", family="", split="train")
        for t in TEXTS[:6]
    ]
    tokenized = batching.tokenize_examples(tok, examples, 48)
    rows = [batching.tokenize_example(tok, example, 48) for example in examples]
    first = batching.pack_examples(tokenized, 48)
    again = batching.pack_examples(rows, 48)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])


@pytest.mark.parametrize(
    ("prompt", "response"),
    [
        ("one two three four five six seven eight nine ten", "Brightwell"),
        ("Where is Karsh?", "Karsh lies on the river Valo and Mera Tolvan founded Brightwell."),
    ],
    ids=["long_prompt", "long_response"],
)
def test_pack_truncates_like_tokenize_example(tok, prompt, response):
    example = TextExample(prompt=prompt, response=response, kind="qa", family="f", split="train")
    seq_len = 8
    tokenized = batching.tokenize_examples(tok, [example], 64)
    assert tokenized["input_mask"].sum() > seq_len, "the example must need truncation"
    packed = batching.pack_examples(tokenized, seq_len)
    expected = batching.tokenize_example(tok, example, seq_len)
    assert len(packed["tokens"]) == 1
    np.testing.assert_array_equal(packed["tokens"][0], expected.tokens)
    np.testing.assert_array_equal(packed["loss_mask"][0], expected.loss_mask)
    np.testing.assert_array_equal(packed["input_mask"][0], expected.input_mask)


def test_pack_rejects_bad_input():
    arrays = _examples_arrays()
    with pytest.raises(ValueError, match="seq_len=1 is too short"):
        batching.pack_examples(arrays, 1)
    with pytest.raises(ValueError, match=r"lacks the arrays \['loss_mask'\]"):
        batching.pack_examples({"tokens": arrays["tokens"], "input_mask": arrays["input_mask"]}, 8)
    empty = {name: array.copy() for name, array in arrays.items()}
    empty["input_mask"][1] = 0
    with pytest.raises(ValueError, match="example 1 has no tokens"):
        batching.pack_examples(empty, ROW_LEN)


def test_too_few_rows_for_batch_raise(tok):
    examples = [
        TextExample(prompt="", response=t, kind="corpus", family="", split="train")
        for t in TEXTS[:6]
    ]
    with pytest.raises(ValueError, match="fewer than batch_size=6"):
        sft.packed_sft_arrays(tok, examples, 128, batch_size=6)
