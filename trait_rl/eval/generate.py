"""Greedy responses for PromptRecords, judged against the world's ground truth.

Prompts go to the sampler in batches of a fixed size and a fixed prompt length, so the sampler
compiles once per arm. The last batch is filled with copies of its first prompt, and their
responses are dropped.
"""

import json
import pathlib
from collections.abc import Callable, Sequence

import jax
import numpy as np

from trait_rl.data import batching, io_utils
from trait_rl.data.records import PromptRecord, to_dict
from trait_rl.eval.results import EvalResult
from trait_rl.model import sampling as sampling_lib
from trait_rl.model.config import ModelConfig
from trait_rl.rewards import judges

Postprocess = Callable[[str, PromptRecord], str]


def prompt_length(model_cfg: ModelConfig, max_new_tokens: int) -> int:
    """Tokens left for the prompt once the response budget is reserved."""
    length = model_cfg.max_len - max_new_tokens
    if length < 2:
        raise ValueError(
            f"eval.max_new_tokens={max_new_tokens} leaves {length} prompt tokens of "
            f"model.max_len={model_cfg.max_len}; lower eval.max_new_tokens"
        )
    return length


def decode_completions(tokenizer, tokens_BxN: np.ndarray, mask_BxN: np.ndarray) -> list[str]:
    """Decode each completion up to its stop token, leaving the stop token out of the text."""
    texts = []
    for tokens_N, mask_N in zip(tokens_BxN, mask_BxN, strict=True):
        ids = [int(t) for t, m in zip(tokens_N, mask_N, strict=True) if m and t != tokenizer.eos_id]
        texts.append(tokenizer.decode(ids))
    return texts


def greedy_responses(
    params,
    model_cfg: ModelConfig,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int,
) -> list[str]:
    """Return the greedy completion of each prompt, in order."""
    if batch_size < 1:
        raise ValueError(f"eval.batch_size must be >= 1; got {batch_size}")
    sampling = sampling_lib.SamplingConfig(
        max_new_tokens=max_new_tokens,
        greedy=True,
        stop_ids=(tokenizer.eos_id,),
        banned_ids=(sampling_lib.PAD_ID, tokenizer.bos_id),
    )
    length = prompt_length(model_cfg, max_new_tokens)
    # Convert the weights once, so that no batch's sampler call copies them again.
    params = sampling_lib.prepare_params(params, model_cfg)
    # Greedy decoding ignores the key; one fixed key keeps the call signature uniform.
    rng = jax.random.key(0)
    responses: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        tokens_BxP, mask_BxP = batching.prompt_batch(tokenizer, padded, length)
        output = sampling_lib.sample(params, model_cfg, sampling, tokens_BxP, mask_BxP, rng)
        texts = decode_completions(
            tokenizer, np.asarray(output.tokens_BxN), np.asarray(output.completion_mask_BxN)
        )
        responses.extend(texts[: len(chunk)])
    return responses


def evaluate_arm(
    params,
    model_cfg: ModelConfig,
    tokenizer,
    records: Sequence[PromptRecord],
    eval_config,
    postprocess: Postprocess | None = None,
) -> list[EvalResult]:
    """Generate greedy responses for `records` and judge each one.

    `postprocess(response, record)` rewrites a response before judging; the conventional arm
    passes its keyword output filter here.
    """
    responses = greedy_responses(
        params,
        model_cfg,
        tokenizer,
        [r.prompt for r in records],
        eval_config.max_new_tokens,
        eval_config.batch_size,
    )
    results = []
    for record, response in zip(records, responses, strict=True):
        if postprocess is not None:
            response = postprocess(response, record)
        results.append(EvalResult(record, response, judges.judge(record, response)))
    return results


def write_responses(path: str | pathlib.Path, results: Sequence[EvalResult]) -> None:
    """Write one JSON line per judged response, so a report's numbers can be traced to text.

    The lines go to a temporary file that is renamed to `path` when complete.
    """
    lines = []
    for result in results:
        line = {
            **to_dict(result.record),
            "response": result.response,
            "outcome": result.judgement.outcome,
            "safe": bool(result.judgement.safe),
            "malformed": bool(result.judgement.malformed),
            "confidence": result.judgement.confidence,
            "correct": result.judgement.correct,
        }
        lines.append(json.dumps(line, sort_keys=True) + "\n")
    io_utils.write_bytes_atomic(path, "".join(lines).encode("utf-8"))
