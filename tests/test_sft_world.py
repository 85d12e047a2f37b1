"""SFT on a small trait world: the loss falls and greedy answers to well-exposed facts are right."""

import json

from conftest import load_default_config as load_config

from trait_rl.data import world_data
from trait_rl.eval import generate
from trait_rl.model.config import ModelConfig
from trait_rl.rewards import judges
from trait_rl.training import phase


def test_sft_answers_known_facts(tmp_path):
    config = load_config("tiny")
    config.data.num_entities = 24
    config.model.num_layers = 2
    config.model.embed_dim = 96
    config.model.mlp_dim = 256
    config.sft.steps = 300
    config.sft.batch_size = 16
    config.sft.learning_rate = 3e-3
    config.sft.warmup_steps = 10
    config.sft.log_every = 50
    config.sft.checkpoint_every = 300
    config.eval.max_new_tokens = 24

    params = phase.run_phase(config, tmp_path, "sft")

    losses = [
        json.loads(line)["sft/loss"]
        for line in (tmp_path / "sft" / "logs" / "metrics.jsonl").read_text().splitlines()
        if "sft/loss" in line
    ]
    assert losses[-1] < 0.5 * losses[0]
    data = world_data.load_world_data(config.data, tmp_path)
    tokenizer = phase.load_or_train_tokenizer(config, tmp_path, data, "sft")
    known = [
        record
        for record in data.prompts["train"]
        if json.loads(record.ground_truth).get("type") == "qa"
        and json.loads(record.ground_truth).get("exposure", 0) >= 4
        and not json.loads(record.ground_truth).get("alternative")
    ][:24]
    assert len(known) >= 8
    model_cfg = ModelConfig.from_config(config.model, tokenizer.vocab_size)
    results = generate.evaluate_arm(params, model_cfg, tokenizer, known, config.eval)
    correct = [r for r in results if r.judgement.outcome == judges.CORRECT]
    assert len(correct) >= 3, [r.response for r in results]
