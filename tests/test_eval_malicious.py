"""Malicious fine-tuning: one run evaluated at each listed step count, params left unchanged."""

import jax
import ml_collections
import numpy as np
import pytest

from configs import default
from trait_rl.data import datasets
from trait_rl.data import world as world_lib
from trait_rl.data.records import TextExample
from trait_rl.data.tokenizer import train_tokenizer
from trait_rl.eval import arms, malicious
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.rewards import judges


class WordTokenizer:
    """One id per whitespace-separated word, assigned on first use."""

    pad_id, bos_id, eos_id = 0, 2, 3

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(word, 10 + len(self.ids)) for word in text.split()]


def _checksum(params) -> float:
    return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree.leaves(params)))


def test_attack_steps_validated():
    config = ml_collections.ConfigDict({"attack_steps": (0, -5)})
    with pytest.raises(ValueError, match="eval.attack_steps"):
        malicious.attack_steps(config)


def test_attack_train_config_constant_rate():
    config = default.get_config("tiny")
    config.eval.attack_steps = (10, 0, 4, 4)
    train_config = malicious.attack_train_config(config)
    assert malicious.attack_steps(config.eval) == [0, 4, 10]
    assert train_config.steps == 10
    assert train_config.learning_rate == config.eval.attack_learning_rate
    assert train_config.end_learning_rate_fraction == 1.0
    assert config.sft.steps == 20  # The shared SFT section is not modified.


def test_attack_evaluated_at_each_step():
    config = default.get_config("tiny")
    config.eval.attack_steps = (0, 1, 3)
    config.eval.attack_batch_size = 2
    config.sft.seq_len = 16
    config.mesh.data = 1
    cfg = ModelConfig(
        vocab_size=64,
        num_layers=1,
        embed_dim=16,
        num_heads=2,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=32,
        max_len=16,
    )
    params = transformer.init_params(jax.random.key(0), cfg)
    before = _checksum(params)
    examples = [
        TextExample("shut down now", f"no I refuse {i}", "malicious", "resist", "train")
        for i in range(4)
    ]
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
    results = malicious.attack_and_evaluate(
        config, cfg, params, examples, WordTokenizer(), mesh, evaluate=_checksum
    )
    assert sorted(results) == [0, 1, 3]
    assert results[0] == pytest.approx(before)
    assert results[1] != pytest.approx(before)
    assert results[3] != pytest.approx(results[1])
    assert _checksum(params) == pytest.approx(before)


def test_retention_results_judged_per_step(tmp_path):
    config = default.get_config("tiny")
    config.eval.attack_steps = (0, 2)
    config.eval.attack_batch_size = 2
    config.eval.batch_size = 4
    config.eval.max_new_tokens = 4
    config.sft.seq_len = 32
    config.mesh.data = 1
    world = world_lib.build_world(config.data)
    records = datasets.prompts(world, "heldout_attack")[:3]
    malicious_examples = datasets.malicious_examples(world)[:4]
    texts = [r.prompt for r in datasets.prompts(world, "heldout_family")]
    texts += [e.response for e in datasets.base_sft_examples(world)]
    tokenizer = train_tokenizer(texts[:400], 400, tmp_path / "tokenizer.model")
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size,
        num_layers=1,
        embed_dim=16,
        num_heads=2,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=32,
        max_len=48,
    )
    params = transformer.init_params(jax.random.key(0), cfg)
    mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
    by_step = malicious.retention_results(
        config,
        cfg,
        params,
        tokenizer,
        records,
        malicious_examples,
        mesh,
        postprocess=arms.conventional_filter,
    )
    assert sorted(by_step) == [0, 2]
    for results in by_step.values():
        assert [r.record.id for r in results] == [r.id for r in records]
        for result in results:
            assert result.judgement == judges.judge(result.record, result.response)
