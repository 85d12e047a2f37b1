"""Run one training phase end to end: data, tokenizer, previous checkpoint, training, final save.

Phases and what each starts from:
  sft           random init; builds the world's TFDS datasets (WORKDIR/data) and the tokenizer
                (WORKDIR/tokenizer.model) when missing
  reward        the final SFT params (backbone) plus a fresh 3-output head
  conventional  the final SFT params, fine-tuned on the rule demonstrations
  rl            the final SFT params (policy and frozen reference) and the final reward params;
                writes WORKDIR/rl_<arm> for `config.arm`
"""

import dataclasses
import logging
import os
import pathlib

import jax
import ml_collections

from trait_rl import configuration
from trait_rl.data import tokenizer as tokenizer_lib
from trait_rl.data.world_data import WorldData, load_world_data
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.parallel import sharding
from trait_rl.training import checkpoints, reward_model, sft
from trait_rl.training.metrics import MetricWriter

TOKENIZER_FILE = "tokenizer.model"


def tokenizer_texts(data: WorldData) -> list[str]:
    """Return the texts the tokenizer is trained on: the corpus and the instruction data."""
    examples = data.corpus + data.base_sft
    return [text for example in examples for text in (example.prompt, example.response) if text]


def load_or_train_tokenizer(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, data: WorldData, phase: str
):
    """Load WORKDIR/tokenizer.model; only the sft phase may train it when it is missing.

    With `model.init_from` (a converted Hugging Face checkpoint) the checkpoint's own tokenizer
    is used instead, since the pretrained embeddings are indexed by its ids.
    """
    if config.model.init_from:
        from trait_rl.data.hf_tokenizer import HFTokenizer

        return HFTokenizer.load(config.model.init_from)
    path = pathlib.Path(workdir) / TOKENIZER_FILE
    if path.is_file():
        return tokenizer_lib.Tokenizer.load(path)
    if phase != "sft":
        checkpoints.require_final(workdir, "sft")
        raise FileNotFoundError(f"tokenizer not found at {path}; rerun the sft phase")
    logging.info("training the tokenizer on the world's corpus into %s", path)
    return tokenizer_lib.train_tokenizer(tokenizer_texts(data), config.data.vocab_size, path)


def model_config(config: ml_collections.ConfigDict, tokenizer) -> ModelConfig:
    """Return the model config: config.model, or the converted checkpoint's with init_from."""
    if config.model.init_from:
        from trait_rl.convert import hf_checkpoint

        converted = hf_checkpoint.load_model_config(config.model.init_from)
        return dataclasses.replace(
            converted, remat=config.model.remat, matmul_dtype=config.model.matmul_dtype
        )
    return ModelConfig.from_config(config.model, tokenizer.vocab_size)


def initial_policy(config: ml_collections.ConfigDict, model_cfg: ModelConfig, mesh):
    """Return the params SFT starts from: None (random init) or the converted checkpoint's."""
    if not config.model.init_from:
        return None
    from trait_rl.convert import hf_checkpoint

    shardings = sft.policy_shardings(config, model_cfg, mesh)
    return hf_checkpoint.restore_params(config.model.init_from, model_cfg, shardings)


def phase_directory_name(config: ml_collections.ConfigDict, phase: str) -> str:
    """Return the directory name of `phase`: rl runs write rl_<arm>, the others their name."""
    if phase == "rl":
        if config.arm == "conventional":
            raise ValueError(
                "config.arm='conventional' is trained by --phase=conventional (rule SFT), not by RL"
            )
        return checkpoints.rl_phase_name(config.arm)
    return phase


def restore_policy(config, workdir, model_cfg, mesh, phase: str, config_arg: str):
    """Restore the final params of a policy phase (sft, conventional or rl_<arm>) onto `mesh`."""
    directory = checkpoints.require_final(workdir, phase, config_arg)
    shapes = jax.eval_shape(lambda key: transformer.init_params(key, model_cfg), jax.random.key(0))
    target = checkpoints.abstract_target(shapes, sft.policy_shardings(config, model_cfg, mesh))
    return checkpoints.restore_final_params(directory, target)


def _restore_reward(config, workdir, model_cfg, mesh, config_arg: str):
    directory = checkpoints.require_final(workdir, "reward", config_arg)
    shapes = jax.eval_shape(
        lambda key: reward_model.init_reward_params(
            key, model_cfg, transformer.init_params(key, model_cfg)
        ),
        jax.random.key(0),
    )
    shardings = sharding.param_shardings(
        mesh, reward_model.reward_logical_axes(model_cfg), config.mesh.rules
    )
    return checkpoints.restore_final_params(
        directory, checkpoints.abstract_target(shapes, shardings)
    )


def run_phase(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    phase: str,
    config_arg: str = "configs/default.py",
):
    """Run `phase` under WORKDIR/<phase>/ and return its final params.

    `config_arg` is the `--config` value shown in the error when a previous phase is missing.
    A phase that already finished is restored from its checkpoint instead of retrained.
    """
    configuration.validate(config, jax.device_count())
    name = phase_directory_name(config, phase)
    directory = checkpoints.phase_dir(workdir, name)
    previous = checkpoints.PREVIOUS_PHASE.get(phase)
    if previous is not None:
        checkpoints.require_final(workdir, previous, config_arg)

    mesh = mesh_lib.make_mesh(config.mesh)
    data = load_world_data(config.data, workdir)
    tokenizer = load_or_train_tokenizer(config, workdir, data, phase)
    model_cfg = model_config(config, tokenizer)
    tokenizer_path = None if config.model.init_from else pathlib.Path(workdir) / TOKENIZER_FILE
    checkpoints.save_phase_files(directory, config, tokenizer_path)
    writer = MetricWriter(directory / "logs", enabled=jax.process_index() == 0)
    try:
        if phase == "sft":
            return sft.train_sft(
                config,
                config.sft,
                model_cfg,
                initial_policy(config, model_cfg, mesh),
                data.corpus + data.base_sft,
                tokenizer,
                directory,
                mesh,
                writer,
            )
        sft_params = restore_policy(config, workdir, model_cfg, mesh, "sft", config_arg)
        if phase == "conventional":
            return sft.train_sft(
                config,
                config.conventional,
                model_cfg,
                sft_params,
                data.conventional,
                tokenizer,
                directory,
                mesh,
                writer,
                prefix="conventional",
            )
        if phase == "reward":
            params, accuracy = reward_model.train_reward_model(
                config,
                config.reward,
                model_cfg,
                sft_params,
                data.preference_train,
                data.preference_validation,
                tokenizer,
                directory,
                mesh,
                writer,
            )
            logging.info("reward pairwise accuracy on validation pairs: %s", accuracy)
            return params
        # Imported here so that the other phases do not load the RL modules.
        from trait_rl.training import rl_loop

        reward_params = _restore_reward(config, workdir, model_cfg, mesh, config_arg)
        return rl_loop.train_rl(
            config,
            model_cfg,
            sft_params,
            sft_params,
            reward_params,
            tokenizer,
            data.rl_prompts(config.rl.trait_mix),
            directory,
            mesh,
            writer,
        )
    finally:
        writer.close()
