"""Batching: masks, truncation, left-padded prompts and a resumable batch order."""

import numpy as np
import pytest

from trait_rl.data import batching, tokenizer
from trait_rl.data.records import PreferencePair, TextExample

CORPUS = [
    "<|user|> Where is Karsh? <|assistant|> Karsh lies on the river Valo. Confidence: 90%",
    "<|user|> Who founded Brightwell? <|assistant|> I don't know.",
    "Mera Tolvan founded the company Brightwell in 1987.",
] * 40


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "trait.model"
    return tokenizer.train_tokenizer(CORPUS, vocab_size=400, path=path)


def _example(prompt, response):
    return TextExample(prompt=prompt, response=response, kind="qa", family="f", split="train")


def test_example_layout_and_masks(tok):
    prompt = "<|user|> Where is Karsh? <|assistant|>"
    response = " Karsh lies on the river Valo."
    tokens, input_mask, loss_mask = batching.tokenize_example(tok, _example(prompt, response), 64)
    prompt_ids, response_ids = tok.encode(prompt), tok.encode(response)
    length = 1 + len(prompt_ids) + len(response_ids) + 1
    expected = [tok.bos_id, *prompt_ids, *response_ids, tok.eos_id]
    assert tokens.dtype == np.int32
    assert tokens.shape == input_mask.shape == loss_mask.shape == (64,)
    assert tokens[:length].tolist() == expected
    assert (tokens[length:] == tok.pad_id).all()
    assert input_mask.tolist() == [1] * length + [0] * (64 - length)
    assert loss_mask[: 1 + len(prompt_ids)].sum() == 0
    assert loss_mask[1 + len(prompt_ids) : length].tolist() == [1] * (len(response_ids) + 1)
    assert loss_mask[length:].sum() == 0
    assert loss_mask[length - 1] == 1  # eos is a target.
    assert tok.decode(tokens[loss_mask == 1]) == response


def test_corpus_example_all_targets(tok):
    text = "Mera Tolvan founded Brightwell."
    tokens, input_mask, loss_mask = batching.tokenize_example(tok, _example("", text), 32)
    assert tokens[0] == tok.bos_id
    assert loss_mask.sum() == len(tok.encode(text)) + 1
    assert loss_mask[0] == 0


def test_truncates_prompt_from_left(tok):
    prompt = "<|user|> " + "Where is Karsh? " * 20 + "<|assistant|>"
    response = " Valo."
    seq_len = 16
    tokens, input_mask, loss_mask = batching.tokenize_example(tok, _example(prompt, response), 16)
    response_ids = tok.encode(response)
    assert input_mask.sum() == seq_len
    assert tokens[0] == tok.bos_id
    assert tokens[-1] == tok.eos_id
    assert tokens[-2 - len(response_ids) + 1 : -1].tolist() == response_ids
    assert tokens[-2 - len(response_ids)] == tok.marker_id("<|assistant|>")
    assert loss_mask.sum() == len(response_ids) + 1


def test_long_response_cut_without_eos(tok):
    response = "Karsh lies on the river Valo. " * 10
    tokens, input_mask, loss_mask = batching.tokenize_example(tok, _example("Q?", response), 12)
    assert input_mask.sum() == 12
    assert tok.eos_id not in tokens.tolist()
    assert tokens[1:].tolist() == tok.encode(response)[:11]
    assert loss_mask.sum() == 11


def test_pair_identical_flag(tok):
    pair = PreferencePair("<|user|> Q? <|assistant|>", " Yes.", " No.", "honesty", "f", "train")
    different = batching.tokenize_pair(tok, pair, 32)
    assert not different.identical
    assert different.chosen.tokens.tolist() != different.rejected.tokens.tolist()
    long = PreferencePair(
        "Q?", "same start " * 20 + "A", "same start " * 20 + "B", "honesty", "f", "t"
    )
    same = batching.tokenize_pair(tok, long, 8)
    assert same.identical


def test_tokenize_pairs_drops_identical(tok):
    pairs = [
        PreferencePair("Q?", " Yes.", " No.", "humility", "f", "train"),
        PreferencePair("Q?", "x " * 30 + "A", "x " * 30 + "B", "honesty", "f", "train"),
        PreferencePair("Q?", " Stop.", " Never.", "all", "f", "train"),
    ]
    arrays, dropped = batching.tokenize_pairs(tok, pairs, 10)
    assert dropped == 1
    assert arrays["chosen_tokens"].shape == (2, 10)
    assert arrays["trait"].tolist() == [1, -1]


def test_prompt_batch_left_padded(tok):
    prompts = ["<|user|> Where is Karsh? <|assistant|>", "<|user|> Hi <|assistant|>"]
    tokens_BxP, mask_BxP = batching.prompt_batch(tok, prompts, 24)
    assert tokens_BxP.shape == mask_BxP.shape == (2, 24)
    for row, prompt in enumerate(prompts):
        ids = [tok.bos_id, *tok.encode(prompt)]
        assert tokens_BxP[row, -len(ids) :].tolist() == ids
        assert (tokens_BxP[row, : 24 - len(ids)] == tok.pad_id).all()
        assert mask_BxP[row].tolist() == [0] * (24 - len(ids)) + [1] * len(ids)
        assert tokens_BxP[row, -1] == tok.marker_id("<|assistant|>")


def test_prompt_batch_truncates_left(tok):
    prompt = "Where is Karsh? " * 20 + "<|assistant|>"
    tokens_BxP, mask_BxP = batching.prompt_batch(tok, [prompt], 6)
    assert mask_BxP.sum() == 6
    assert tokens_BxP[0, 0] == tok.bos_id
    assert tokens_BxP[0, 1:].tolist() == tok.encode(prompt)[-5:]


def test_batch_indices_cover_epoch():
    seen = np.concatenate([batching.batch_indices(10, 3, seed=7, step=s) for s in range(3)])
    assert len(set(seen.tolist())) == 9
    next_epoch = batching.batch_indices(10, 3, seed=7, step=3)
    assert next_epoch.tolist() != seen[:3].tolist()
    assert batching.batch_indices(10, 3, seed=8, step=0).tolist() != seen[:3].tolist()


def test_iterator_resume_equals_uninterrupted():
    arrays = {"tokens": np.arange(22 * 4).reshape(22, 4), "loss_mask": np.ones((22, 4))}
    full = batching.batch_iterator(arrays, batch_size=4, seed=3)
    uninterrupted = [next(full) for _ in range(12)]
    resumed = batching.batch_iterator(arrays, batch_size=4, seed=3, start_step=7)
    for step in range(7, 12):
        batch = next(resumed)
        assert np.array_equal(batch["tokens"], uninterrupted[step]["tokens"])
        expected = arrays["tokens"][batching.batch_indices(22, 4, 3, step)]
        assert np.array_equal(batch["tokens"], expected)


def test_iterator_process_slices_cover_batch():
    arrays = {"x": np.arange(16)}
    whole = next(batching.batch_iterator(arrays, 8, seed=1, start_step=2))["x"]
    parts = [
        next(
            batching.batch_iterator(
                arrays, 8, seed=1, start_step=2, process_index=i, process_count=2
            )
        )["x"]
        for i in range(2)
    ]
    assert np.concatenate(parts).tolist() == whole.tolist()


def test_iterator_rejects_bad_input():
    with pytest.raises(ValueError, match="fewer than batch_size"):
        next(batching.batch_iterator({"x": np.arange(3)}, 4, seed=0))
    with pytest.raises(ValueError, match="leading dimension"):
        next(batching.batch_iterator({"x": np.arange(8), "y": np.arange(9)}, 4, seed=0))
