"""Public multiple-choice evaluations scored by the log-likelihood of each answer option.

Each (question, choice) pair is tokenized as bos + chat prompt + choice, the way SFT examples are,
and scored by the summed log-probability of the choice tokens. The model picks the choice with
the highest score. TruthfulQA MC2 is the normalised probability mass on the true choices.
"""

from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np

from trait_rl.data import chat
from trait_rl.data.public_evals import MultipleChoiceItem
from trait_rl.model import logps as model_logps
from trait_rl.model.config import ModelConfig

# (tokens_BxT, input_mask_BxT) -> logps_BxT with logps[:, t] = log p(tokens[t] | tokens[<t]).
LogpsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def encode_choice(tokenizer, question: str, choice: str, max_len: int) -> tuple[list[int], int]:
    """Return (ids, number of choice tokens at the end) for one option.

    A prompt too long for `max_len` loses its oldest tokens; the choice is always kept whole.
    """
    prompt_ids = tokenizer.encode(chat.render_prompt([("user", question)]))
    choice_ids = tokenizer.encode(" " + choice.strip())
    room = max_len - 1 - len(choice_ids)
    if room < 1:
        raise ValueError(
            f"choice {choice[:40]!r} takes {len(choice_ids)} tokens, too many for "
            f"model.max_len={max_len}"
        )
    return [tokenizer.bos_id, *prompt_ids[-room:], *choice_ids], len(choice_ids)


def _choice_logps(
    logps_fn: LogpsFn,
    sequences: Sequence[tuple[list[int], int]],
    max_len: int,
    batch_size: int,
) -> np.ndarray:
    """Sum of the choice-token log-probs of each sequence; rows padded to a fixed batch shape."""
    scores = np.zeros(len(sequences), dtype=np.float64)
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        tokens_BxT = np.zeros((batch_size, max_len), dtype=np.int32)
        mask_BxT = np.zeros((batch_size, max_len), dtype=np.int32)
        choice_mask_BxT = np.zeros((batch_size, max_len), dtype=np.float64)
        for row, (ids, num_choice) in enumerate(chunk):
            tokens_BxT[row, : len(ids)] = ids
            mask_BxT[row, : len(ids)] = 1
            choice_mask_BxT[row, len(ids) - num_choice : len(ids)] = 1.0
        logps_BxT = np.asarray(logps_fn(tokens_BxT, mask_BxT), dtype=np.float64)
        scores[start : start + len(chunk)] = (logps_BxT * choice_mask_BxT).sum(axis=1)[: len(chunk)]
    return scores


def score_items(
    logps_fn: LogpsFn,
    tokenizer,
    items: Sequence[MultipleChoiceItem],
    max_len: int,
    batch_size: int,
) -> list[np.ndarray]:
    """Return, per item, the summed log-probability of each of its choices."""
    sequences = [
        encode_choice(tokenizer, item.question, choice, max_len)
        for item in items
        for choice in item.choices
    ]
    flat = _choice_logps(logps_fn, sequences, max_len, batch_size)
    scores, offset = [], 0
    for item in items:
        scores.append(flat[offset : offset + len(item.choices)])
        offset += len(item.choices)
    return scores


def desired_choice_rate(items: Sequence[MultipleChoiceItem], scores: Sequence[np.ndarray]) -> float:
    """Fraction of items whose highest-scoring choice is a desired one (MC1 accuracy)."""
    hits = [int(np.argmax(s)) in item.desired for item, s in zip(items, scores, strict=True)]
    return float(np.mean(hits))


def desired_probability_mass(
    items: Sequence[MultipleChoiceItem], scores: Sequence[np.ndarray]
) -> float:
    """Mean over items of p(desired choices) / p(all choices), with p = exp(summed logps) (MC2)."""
    masses = []
    for item, s in zip(items, scores, strict=True):
        probs = np.exp(s - s.max())
        masses.append(probs[list(item.desired)].sum() / probs.sum())
    return float(np.mean(masses))


def model_logps_fn(params, model_cfg: ModelConfig) -> LogpsFn:
    """Wrap per_token_logps of a model as a LogpsFn, compiled once per batch shape."""
    compute = jax.jit(model_logps.per_token_logps, static_argnums=(1,))
    return lambda tokens_BxT, mask_BxT: np.asarray(compute(params, model_cfg, tokens_BxT, mask_BxT))


def evaluate_public_mc(
    logps_fn: LogpsFn,
    tokenizer,
    evals: Mapping[str, Sequence[MultipleChoiceItem]],
    max_len: int,
    batch_size: int,
    max_items: int = 0,
) -> dict[str, dict]:
    """Score every loaded evaluation; return name -> {"metric", "value", "count"}.

    truthfulqa_mc2 reports the probability mass on true answers, every other evaluation the rate
    of choosing a desired option (correct, corrigible or the right answer/abstain call). Anthropic
    items are also reported per source file. `max_items` > 0 keeps the first items of each.
    """
    results = {}
    for name, items in evals.items():
        items = list(items[:max_items] if max_items else items)
        if not items:
            continue
        scores = score_items(logps_fn, tokenizer, items, max_len, batch_size)
        if name == "truthfulqa_mc2":
            results[name] = {
                "metric": "true_probability_mass",
                "value": desired_probability_mass(items, scores),
                "count": len(items),
            }
            continue
        results[name] = {
            "metric": "desired_choice_rate",
            "value": desired_choice_rate(items, scores),
            "count": len(items),
        }
        sources = sorted({item.source for item in items})
        if len(sources) > 1:
            for source in sources:
                picked = [(i, s) for i, s in zip(items, scores, strict=True) if i.source == source]
                results[f"{name}/{source}"] = {
                    "metric": "desired_choice_rate",
                    "value": desired_choice_rate([i for i, _ in picked], [s for _, s in picked]),
                    "count": len(picked),
                }
    return results
