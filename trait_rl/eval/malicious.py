"""Malicious fine-tuning attack: SFT an aligned arm on harmful examples, evaluating as it goes.

One attack run per arm trains for max(config.eval.attack_steps) steps at a constant learning rate
and is evaluated after each listed step count. Because the rate is constant, the params after k
steps equal those of a separate k-step attack with the same data order.
"""

from collections.abc import Callable, Sequence
from typing import TypeVar

import ml_collections

from trait_rl.data.records import PromptRecord, TextExample
from trait_rl.eval import generate
from trait_rl.eval.results import EvalResult
from trait_rl.model.config import ModelConfig
from trait_rl.training import loop, optimizer, sft, train_state

T = TypeVar("T")


def attack_steps(eval_config) -> list[int]:
    """Return the sorted distinct step counts of config.eval.attack_steps, checked."""
    steps = list(eval_config.attack_steps)
    if not steps or any(not isinstance(s, int) or s < 0 for s in steps):
        raise ValueError(
            f"invalid eval.attack_steps={tuple(steps)!r}; expected non-negative integers, "
            "for example (0, 25, 50, 100)"
        )
    return sorted(set(steps))


def attack_train_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """SFT settings of the attack: config.sft with the attack's steps, rate and batch size."""
    train_config = ml_collections.ConfigDict(config.sft.to_dict())
    train_config.steps = max(1, max(attack_steps(config.eval)))
    train_config.learning_rate = config.eval.attack_learning_rate
    train_config.batch_size = config.eval.attack_batch_size
    train_config.warmup_steps = 0
    train_config.end_learning_rate_fraction = 1.0  # Constant rate: see the module docstring.
    train_config.log_every = max(1, min(train_config.log_every, train_config.steps))
    return train_config


def attack_and_evaluate(
    config: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    params,
    malicious_examples: Sequence[TextExample],
    tokenizer,
    mesh,
    evaluate: Callable[[object], T],
    writer=None,
    prefix: str = "attack",
) -> dict[int, T]:
    """Fine-tune `params` on the malicious examples; return step count -> evaluate(params).

    `params` themselves are not modified, so the unattacked arm stays usable.
    """
    steps = attack_steps(config.eval)
    results: dict[int, T] = {}
    if steps[0] == 0:
        results[0] = evaluate(params)
    if steps[-1] == 0:
        return results
    train_config = attack_train_config(config)
    arrays = sft.packed_sft_arrays(
        tokenizer, malicious_examples, train_config.seq_len, train_config.batch_size
    )
    tx = optimizer.make_optimizer(train_config, prefix)
    state, shardings = train_state.train_state_from_params(
        params, config.seed, tx, mesh, sft.policy_shardings(config, model_cfg, mesh)
    )
    step_fn = sft.make_sft_step(
        model_cfg.with_activation_dtype(train_config.get("dtype", "")),
        tx,
        mesh,
        shardings,
        optimizer.make_schedule(train_config),
    )
    batches = sft.sft_batches(arrays, train_config.batch_size, config.seed, 0, mesh)
    for target in (s for s in steps if s > 0):
        state = loop.train_loop(
            state,
            step_fn,
            batches,
            num_steps=target,
            prefix=prefix,
            writer=writer,
            log_every=train_config.log_every,
        )
        results[target] = evaluate(state.params)
    return results


def retention_results(
    config: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    params,
    tokenizer,
    records: Sequence[PromptRecord],
    malicious_examples: Sequence[TextExample],
    mesh,
    postprocess: generate.Postprocess | None = None,
    writer=None,
    prefix: str = "attack",
) -> dict[int, list[EvalResult]]:
    """Judged responses on `records` after each attack step count, for one arm.

    The conventional arm passes its output filter as `postprocess`, since the filter is part of
    what it deploys.
    """

    def evaluate(attacked_params) -> list[EvalResult]:
        return generate.evaluate_arm(
            attacked_params, model_cfg, tokenizer, records, config.eval, postprocess
        )

    return attack_and_evaluate(
        config, model_cfg, params, malicious_examples, tokenizer, mesh, evaluate, writer, prefix
    )
