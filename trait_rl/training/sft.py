"""Supervised fine-tuning: next-token loss on the response tokens and the stop token.

Pretraining on the corpus, instruction SFT, the conventional-alignment SFT and the malicious
fine-tuning attack all run this code; only the examples differ. The batches come from
`trait_rl.data.batching`, whose `loss_mask` marks the response tokens and the eos as targets.
"""

import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from trait_rl.data import batching
from trait_rl.data.records import TextExample
from trait_rl.model import logps, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import sharding
from trait_rl.training import loop, optimizer, train_state
from trait_rl.training.train_state import TrainState


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SFTBatch:
    """A batch of right-padded or packed rows; every field is int32 B x T.

    `loss_mask[b, t] = 1` when `tokens[b, t]` is a training target, predicted from the tokens
    before it (response tokens and the eos). The first token of a segment is never a target.
    `segment_ids` numbers the examples packed into a row (0 = padding). Left out, it defaults
    to `input_mask`, which means one example per row. `input_mask` is `segment_ids > 0`.
    """

    tokens: jax.Array
    input_mask: jax.Array
    loss_mask: jax.Array
    segment_ids: jax.Array | None = None

    def __post_init__(self):
        if self.segment_ids is None:
            object.__setattr__(self, "segment_ids", self.input_mask)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "SFTBatch":
        """Build a batch from `batching.pack_examples` or `batching.tokenize_examples` arrays."""
        missing = {"tokens", "loss_mask"} - set(arrays)
        if not {"input_mask", "segment_ids"} & set(arrays):
            missing.add("input_mask or segment_ids")
        if missing:
            raise ValueError(f"SFT arrays lack the fields {sorted(missing)}")
        segment_ids = arrays.get("segment_ids", arrays.get("input_mask"))
        input_mask = arrays.get("input_mask")
        if input_mask is None:
            input_mask = (segment_ids > 0).astype(np.int32)
        return cls(
            tokens=arrays["tokens"],
            input_mask=input_mask,
            loss_mask=arrays["loss_mask"],
            segment_ids=segment_ids,
        )


def sft_loss(
    params, model_cfg: ModelConfig, batch: SFTBatch
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Return the token-level mean NLL over loss-mask positions, and metrics.

    nll[b, t] = -log p(tokens[b, t] | tokens[b, <t] of the same segment) for t >= 1, with the
    log-softmax in float32. A target whose previous token belongs to another segment is skipped.
    The mean is over all target tokens of the batch, so long responses weigh more than short
    ones, and packing examples into rows leaves the loss unchanged.
    Metrics: `loss`, `accuracy` (greedy next-token accuracy on targets), `tokens` (target count).
    """
    logits_BxTxV, _ = transformer.forward(
        params, model_cfg, batch.tokens, batch.input_mask, segment_ids_BxT=batch.segment_ids
    )
    logits_BxSxV = logits_BxTxV[:, :-1]
    targets_BxS = batch.tokens[:, 1:]
    same_segment_BxS = batch.segment_ids[:, 1:] == batch.segment_ids[:, :-1]
    mask_BxS = (batch.loss_mask[:, 1:] * same_segment_BxS).astype(jnp.float32)
    nll_BxS = -logps.token_logps(logits_BxSxV, targets_BxS)
    num_tokens = jnp.sum(mask_BxS)
    denominator = jnp.maximum(num_tokens, 1.0)
    loss = jnp.sum(nll_BxS * mask_BxS) / denominator
    correct_BxS = (jnp.argmax(logits_BxSxV, axis=-1) == targets_BxS).astype(jnp.float32)
    accuracy = jnp.sum(correct_BxS * mask_BxS) / denominator
    return loss, {"loss": loss, "accuracy": accuracy, "tokens": num_tokens}


def batch_shardings(mesh) -> SFTBatch:
    """Shard every field's batch dimension over the data axes."""
    batch_2d = sharding.batch_sharding(mesh, 2)
    return SFTBatch(tokens=batch_2d, input_mask=batch_2d, loss_mask=batch_2d, segment_ids=batch_2d)


def make_sft_step(
    model_cfg: ModelConfig,
    tx: optax.GradientTransformation,
    mesh,
    state_shardings: TrainState,
    schedule: optax.Schedule | None = None,
):
    """Return `step(state, batch) -> (state, metrics)`, jitted once with donation of `state`."""
    return train_state.make_train_step(
        lambda params, batch: sft_loss(params, model_cfg, batch),
        tx,
        state_shardings,
        batch_shardings(mesh),
        schedule,
    )


def sft_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int, seed: int, start_step: int, mesh
) -> Iterator[SFTBatch]:
    """Yield device SFTBatches from `start_step` on (see loop.device_batches)."""
    return loop.device_batches(arrays, batch_size, seed, start_step, mesh, SFTBatch.from_arrays)


def packed_sft_arrays(
    tokenizer, examples: Sequence[TextExample], seq_len: int, batch_size: int
) -> dict[str, np.ndarray]:
    """Tokenize and pack `examples` into rows of `seq_len`; check that a batch can be filled.

    `train_sft` trains on these rows, so that a step spends its compute on real tokens instead
    of padding.
    """
    arrays = batching.tokenize_and_pack(tokenizer, examples, seq_len)
    rows = len(arrays["tokens"])
    if rows < batch_size:
        raise ValueError(
            f"{len(examples)} examples pack into {rows} rows of seq_len={seq_len} tokens, fewer "
            f"than batch_size={batch_size}; lower batch_size or seq_len, or add data"
        )
    logging.info(
        "packed %d examples into %d rows of %d tokens (%.1f%% real tokens)",
        len(examples),
        rows,
        seq_len,
        100 * batching.packing_efficiency(arrays),
    )
    return arrays


def policy_shardings(config: ml_collections.ConfigDict, model_cfg: ModelConfig, mesh):
    """Return the NamedShardings of the transformer parameters from `config.mesh.rules`."""
    axes = transformer.param_logical_axes(model_cfg)
    return sharding.param_shardings(mesh, axes, config.mesh.rules)


def train_sft(
    config: ml_collections.ConfigDict,
    train_config: ml_collections.ConfigDict,
    model_cfg: ModelConfig,
    params,
    examples: Sequence[TextExample],
    tokenizer,
    workdir_phase: str | os.PathLike | None,
    mesh,
    writer=None,
    prefix: str = "sft",
):
    """Fine-tune `params` (or a random init when None) on `examples`; return the new params.

    `train_config` is the section of this run (`config.sft`, `config.conventional`, ...).
    Checkpoints go to `workdir_phase` (None: no checkpoints), and a run there resumes from its
    latest checkpoint. Metrics are logged as `<prefix>/loss`, `<prefix>/accuracy`, ...
    The examples are packed into rows of `train_config.seq_len` tokens, and
    `train_config.batch_size` counts rows, each holding one or more examples.
    """
    arrays = packed_sft_arrays(tokenizer, examples, train_config.seq_len, train_config.batch_size)
    tx = optimizer.make_optimizer(train_config, prefix)
    param_shardings = policy_shardings(config, model_cfg, mesh)
    if params is None:
        state, shardings = train_state.init_train_state(
            lambda key: transformer.init_params(key, model_cfg),
            config.seed,
            tx,
            mesh,
            param_shardings,
        )
    else:
        state, shardings = train_state.train_state_from_params(
            params, config.seed, tx, mesh, param_shardings
        )
    step_fn = make_sft_step(
        model_cfg.with_activation_dtype(train_config.get("dtype", "")),
        tx,
        mesh,
        shardings,
        optimizer.make_schedule(train_config),
    )
    state = loop.fit(
        state,
        step_fn,
        lambda start: sft_batches(arrays, train_config.batch_size, config.seed, start, mesh),
        train_config=train_config,
        prefix=prefix,
        directory=workdir_phase,
        writer=writer,
        hparams={"model": config.model.to_dict(), prefix: train_config.to_dict()},
    )
    return state.params
