"""Token arrays for training and sampling, and a deterministic, resumable batch order.

Sequence layout for training (right padded to `seq_len`):

    bos, prompt tokens, response tokens, eos, pad, pad, ...

`loss_mask[t] = 1` marks the positions whose token is a training target, predicted from the
tokens before it: the response tokens and the eos. The bos, the prompt and the padding are
never targets. Every sequence starts with bos so that the first response token of a corpus
document (empty prompt) is predicted from a fixed context.

Truncation when the sequence is longer than `seq_len`:
1. drop the oldest prompt tokens (left truncation, the bos stays), so the response and its eos
   survive whole whenever they fit;
2. if the response alone does not fit, cut it on the right and drop the eos, because a stop
   token after a cut would teach the model to stop mid-answer.

Prompts for sampling are LEFT padded, so every prompt ends at the same position and generation
starts right after it for the whole batch.

Packing (`pack_examples`) puts several tokenized sequences into one row of `seq_len` tokens,
each with its own segment id, so that short examples do not spend most of a batch on padding.
The model keeps the segments apart (attention within a segment, positions from 0 in each).
"""

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from trait_rl.data.records import PreferencePair, TextExample
from trait_rl.data.tokenizer import Tokenizer


class TokenizedExample(NamedTuple):
    """One training sequence; each array is int32 with shape [seq_len]."""

    tokens: np.ndarray
    input_mask: np.ndarray
    loss_mask: np.ndarray


class TokenizedPair(NamedTuple):
    """A tokenized preference pair; `identical` is True when truncation made both equal."""

    chosen: TokenizedExample
    rejected: TokenizedExample
    identical: bool


def pad_right(ids: Sequence[int], length: int, pad_id: int = 0) -> np.ndarray:
    """Return `ids` followed by `pad_id` up to `length`, as int32 [length]."""
    if len(ids) > length:
        raise ValueError(f"{len(ids)} ids do not fit length {length}; truncate first")
    out = np.full((length,), pad_id, dtype=np.int32)
    out[: len(ids)] = ids
    return out


def pad_left(ids: Sequence[int], length: int, pad_id: int = 0) -> np.ndarray:
    """Return `pad_id` up to `length` followed by `ids`, as int32 [length]."""
    if len(ids) > length:
        raise ValueError(f"{len(ids)} ids do not fit length {length}; truncate first")
    out = np.full((length,), pad_id, dtype=np.int32)
    out[length - len(ids) :] = ids
    return out


def _fit(prompt_ids: list[int], response_ids: list[int], eos_id: int, seq_len: int):
    """Apply the truncation policy; returns (prompt_ids, response_ids) with eos where it fits."""
    room = seq_len - 1  # The bos always takes one position.
    response_with_eos = response_ids + [eos_id]
    if len(response_with_eos) <= room:
        first_kept = max(0, len(prompt_ids) - (room - len(response_with_eos)))
        return prompt_ids[first_kept:], response_with_eos
    return [], response_ids[:room]


def tokenize_example(tokenizer: Tokenizer, example: TextExample, seq_len: int) -> TokenizedExample:
    """Tokenize prompt and response into right-padded arrays with the loss on the response."""
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is too short; it must hold bos and one token")
    prompt_ids, target_ids = _fit(
        tokenizer.encode(example.prompt),
        tokenizer.encode(example.response),
        tokenizer.eos_id,
        seq_len,
    )
    ids = [tokenizer.bos_id, *prompt_ids, *target_ids]
    loss = [0] * (1 + len(prompt_ids)) + [1] * len(target_ids)
    return TokenizedExample(
        tokens=pad_right(ids, seq_len, tokenizer.pad_id),
        input_mask=pad_right([1] * len(ids), seq_len),
        loss_mask=pad_right(loss, seq_len),
    )


def tokenize_examples(
    tokenizer: Tokenizer, examples: Sequence[TextExample], seq_len: int
) -> dict[str, np.ndarray]:
    """Tokenize many examples into a dict of int32 arrays of shape [N, seq_len]."""
    if not examples:
        raise ValueError("tokenize_examples received no examples")
    rows = [tokenize_example(tokenizer, example, seq_len) for example in examples]
    return {
        name: np.stack([getattr(row, name) for row in rows]) for name in TokenizedExample._fields
    }


def _real_tokens(
    tokens: np.ndarray, input_mask: np.ndarray, loss_mask: np.ndarray, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (tokens, loss_mask) of one sequence without its padding."""
    real = np.asarray(input_mask) > 0
    if not real.any():
        raise ValueError(f"example {index} has no tokens (its input_mask is all 0); drop it")
    return np.asarray(tokens)[real], np.asarray(loss_mask)[real]


def _truncate_tokens(
    tokens: np.ndarray, loss_mask: np.ndarray, seq_len: int, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a `bos, prompt, targets` sequence to `seq_len` with the policy of `tokenize_example`.

    The targets (loss_mask 1) must be a suffix. The eos, as the last target, is dropped exactly
    when the targets alone do not fit, as in `_fit`.
    """
    if len(tokens) <= seq_len:
        return tokens, loss_mask
    targets = np.flatnonzero(loss_mask)
    first_target = int(targets[0]) if targets.size else len(tokens)
    if first_target == 0 or not np.all(loss_mask[first_target:] == 1):
        raise ValueError(
            f"example {index} is longer than seq_len={seq_len} and is not laid out as bos, "
            "prompt, targets (loss_mask 0 at position 0, then 1 to the end), so it cannot be "
            "truncated like tokenize_example; tokenize it with seq_len instead"
        )
    room = seq_len - 1
    num_targets = len(tokens) - first_target
    if num_targets <= room:
        kept = np.arange(len(tokens) - room, len(tokens))
    else:
        kept = np.arange(first_target, first_target + room)
    keep = np.concatenate([[0], kept])
    return tokens[keep], loss_mask[keep]


def _as_sequences(
    tokenized: Mapping[str, np.ndarray] | Sequence[TokenizedExample], seq_len: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return unpadded, truncated (tokens, loss_mask) pairs from either input form."""
    if isinstance(tokenized, Mapping):
        missing = {"tokens", "input_mask", "loss_mask"} - set(tokenized)
        if missing:
            raise ValueError(f"pack_examples input lacks the arrays {sorted(missing)}")
        rows = zip(
            tokenized["tokens"], tokenized["input_mask"], tokenized["loss_mask"], strict=True
        )
    else:
        rows = ((row.tokens, row.input_mask, row.loss_mask) for row in tokenized)
    sequences = []
    for index, (tokens, input_mask, loss_mask) in enumerate(rows):
        unpadded = _real_tokens(tokens, input_mask, loss_mask, index)
        sequences.append(_truncate_tokens(*unpadded, seq_len, index))
    if not sequences:
        raise ValueError("pack_examples received no examples")
    return sequences


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Assign items to bins of `capacity` and return each bin's item indices in placement order.

    Items go longest first (ties in input order) into the first bin with room, so the result
    is deterministic.
    """
    lengths_N = np.asarray(lengths, dtype=np.int64)
    invalid = np.flatnonzero((lengths_N < 1) | (lengths_N > capacity))
    if invalid.size:
        first = int(invalid[0])
        raise ValueError(
            f"item {first} has length {int(lengths_N[first])}, but item lengths must be in "
            f"[1, {capacity}]; truncate it or raise the capacity"
        )
    remaining = np.zeros(len(lengths_N), dtype=np.int64)
    bins: list[list[int]] = []
    for item in np.argsort(-lengths_N, kind="stable").tolist():
        with_room = np.flatnonzero(remaining[: len(bins)] >= lengths_N[item])
        if with_room.size:
            target = int(with_room[0])
        else:
            target = len(bins)
            bins.append([])
            remaining[target] = capacity
        bins[target].append(item)
        remaining[target] -= lengths_N[item]
    return bins


def pack_examples(
    tokenized: Mapping[str, np.ndarray] | Sequence[TokenizedExample], seq_len: int
) -> dict[str, np.ndarray]:
    """Pack tokenized sequences into rows of `seq_len` with first-fit decreasing.

    `tokenized` is the output of `tokenize_examples` (N x T arrays) or a list of
    `TokenizedExample`. An example is never split across rows, and one longer than `seq_len` is
    truncated as `tokenize_example` does. Returns int32 R x seq_len arrays: `tokens`,
    `segment_ids` (0 = padding, k = the k-th example of the row), `loss_mask`, and `input_mask`
    (= segment_ids > 0). Each row keeps the same examples in every epoch.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} is too short; it must hold bos and one token")
    sequences = _as_sequences(tokenized, seq_len)
    rows = first_fit_decreasing([len(tokens) for tokens, _ in sequences], seq_len)
    packed = {
        name: np.zeros((len(rows), seq_len), np.int32)
        for name in ("tokens", "segment_ids", "loss_mask")
    }
    for row, members in enumerate(rows):
        start = 0
        for segment, index in enumerate(members, start=1):
            tokens, loss_mask = sequences[index]
            end = start + len(tokens)
            packed["tokens"][row, start:end] = tokens
            packed["loss_mask"][row, start:end] = loss_mask
            packed["segment_ids"][row, start:end] = segment
            start = end
    packed["input_mask"] = (packed["segment_ids"] > 0).astype(np.int32)
    return packed


def tokenize_and_pack(
    tokenizer: Tokenizer, examples: Sequence[TextExample], seq_len: int
) -> dict[str, np.ndarray]:
    """Tokenize examples (truncated to `seq_len`) and pack them; see `pack_examples`."""
    return pack_examples(tokenize_examples(tokenizer, examples, seq_len), seq_len)


def packing_efficiency(packed: Mapping[str, np.ndarray]) -> float:
    """Return the share of real tokens among all tokens of packed rows."""
    segment_ids = np.asarray(packed["segment_ids"])
    return float(np.mean(segment_ids > 0))


def tokenize_pair(tokenizer: Tokenizer, pair: PreferencePair, seq_len: int) -> TokenizedPair:
    """Tokenize the chosen and the rejected response of a pair with the same prompt."""
    chosen = tokenize_example(tokenizer, _as_example(pair, pair.chosen), seq_len)
    rejected = tokenize_example(tokenizer, _as_example(pair, pair.rejected), seq_len)
    identical = bool(np.array_equal(chosen.tokens, rejected.tokens))
    return TokenizedPair(chosen=chosen, rejected=rejected, identical=identical)


def tokenize_pairs(
    tokenizer: Tokenizer, pairs: Sequence[PreferencePair], seq_len: int
) -> tuple[dict[str, np.ndarray], int]:
    """Tokenize pairs into [N, seq_len] arrays `chosen_*` and `rejected_*` and a `trait` index.

    Pairs that truncation makes identical carry no preference signal and are dropped; the
    second return value counts them. `trait` is the index in `trait_rl.TRAITS`, or -1 when the
    pair applies to every trait.
    """
    from trait_rl import TRAITS

    rows = []
    dropped = 0
    for pair in pairs:
        tokenized = tokenize_pair(tokenizer, pair, seq_len)
        if tokenized.identical:
            dropped += 1
            continue
        rows.append((tokenized, TRAITS.index(pair.trait) if pair.trait in TRAITS else -1))
    if not rows:
        raise ValueError(f"all {len(pairs)} pairs are identical after truncation to {seq_len}")
    arrays = {}
    for side in ("chosen", "rejected"):
        for name in TokenizedExample._fields:
            arrays[f"{side}_{name}"] = np.stack([getattr(getattr(r, side), name) for r, _ in rows])
    arrays["trait"] = np.array([trait for _, trait in rows], dtype=np.int32)
    return arrays, dropped


def _as_example(pair: PreferencePair, response: str) -> TextExample:
    return TextExample(
        prompt=pair.prompt,
        response=response,
        kind="preference",
        family=pair.family,
        split=pair.split,
    )


def prompt_batch(
    tokenizer: Tokenizer, prompts: Sequence[str], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Encode prompts as bos + prompt, LEFT padded to `max_len`: (tokens_BxP, mask_BxP) int32.

    A prompt longer than `max_len` keeps its last `max_len - 1` tokens after the bos, because
    the end of a prompt (the open assistant turn) is what the model continues from.
    """
    if max_len < 2:
        raise ValueError(f"max_len={max_len} is too short; it must hold bos and one token")
    tokens_BxP = np.zeros((len(prompts), max_len), dtype=np.int32)
    mask_BxP = np.zeros((len(prompts), max_len), dtype=np.int32)
    for row, prompt in enumerate(prompts):
        ids = [tokenizer.bos_id, *tokenizer.encode(prompt)[-(max_len - 1) :]]
        tokens_BxP[row] = pad_left(ids, max_len, tokenizer.pad_id)
        mask_BxP[row] = pad_left([1] * len(ids), max_len)
    return tokens_BxP, mask_BxP


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Full batches per epoch; the remainder of each shuffled epoch is skipped."""
    if batch_size <= 0:
        raise ValueError(f"batch_size={batch_size} must be positive")
    if num_examples < batch_size:
        raise ValueError(
            f"{num_examples} examples are fewer than batch_size={batch_size}; "
            "lower the batch size or add data"
        )
    return num_examples // batch_size


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Return the example indices of global batch `step`, a pure function of its arguments.

    Epoch `e` is the permutation drawn from `np.random.default_rng([seed, e])`, so any step can
    be recomputed without replaying the earlier ones.
    """
    per_epoch = steps_per_epoch(num_examples, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[position * batch_size : (position + 1) * batch_size]


def batch_iterator(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches forever, starting at `start_step`; a resumed run gets the same batches.

    With several processes, each yields its contiguous slice of the global batch (of size
    `batch_size // process_count`), so the hosts together cover the batch once.
    """
    num_examples = _leading_dim(arrays)
    if batch_size % process_count:
        raise ValueError(f"batch_size={batch_size} is not divisible by {process_count} processes")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, {process_count})")
    per_epoch = steps_per_epoch(num_examples, batch_size)
    per_process = batch_size // process_count
    step = start_step
    epoch = None
    while True:
        if step // per_epoch != epoch:
            epoch = step // per_epoch
            order = np.random.default_rng([seed, epoch]).permutation(num_examples)
        start = (step % per_epoch) * batch_size + process_index * per_process
        indices = order[start : start + per_process]
        yield {name: array[indices] for name, array in arrays.items()}
        step += 1


def _leading_dim(arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {name: len(array) for name, array in arrays.items()}
    if not sizes:
        raise ValueError("batch_iterator received no arrays")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays differ in their leading dimension: {sizes}")
    return next(iter(sizes.values()))
