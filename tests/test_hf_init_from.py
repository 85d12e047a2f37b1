"""Start the SFT phase from a converted Hugging Face checkpoint (`model.init_from`)."""

import jax
import numpy as np
import pytest
from conftest import load_default_config
from test_hf_parity import save_random_model

from trait_rl.convert import hf_checkpoint
from trait_rl.training import phase

pytestmark = pytest.mark.hf


def test_sft_starts_from_converted_checkpoint(tmp_path):
    source = tmp_path / "hf"
    source.mkdir()
    save_random_model("llama_gqa", source)
    converted = tmp_path / "converted"
    model_cfg = hf_checkpoint.convert_checkpoint(source, converted)
    config = load_default_config("tiny")
    config.data.num_entities = 30
    config.model.init_from = str(converted)
    config.model.max_len = model_cfg.max_len
    for section in (config.sft, config.conventional, config.reward):
        section.seq_len = model_cfg.max_len
    config.sft.steps = 2
    config.sft.learning_rate = 1e-9
    config.sft.warmup_steps = 0

    params = phase.run_phase(config, tmp_path / "run", "sft")

    _, reference, _ = hf_checkpoint.load_converted(converted)
    # A learning rate of 1e-9 leaves the converted weights unchanged to 1e-6, so equality shows
    # where SFT started; a random init would differ everywhere.
    for got, expected in zip(jax.tree.leaves(params), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), atol=1e-6)
    assert not (tmp_path / "run" / "tokenizer.model").exists()
