"""The main job end to end on a micro config, and the pipeline's own helpers."""

import json
import pathlib
import types

from conftest import SHARED_DATA
from conftest import load_default_config as load_config

from trait_rl import pipeline
from trait_rl.data.records import PromptRecord
from trait_rl.training import rl_loop


def micro_config():
    config = load_config("tiny")
    config.data.num_entities = 40
    for section in (config.sft, config.conventional, config.reward):
        section.steps = 6
        section.checkpoint_every = 3
    config.rl.steps = 2
    config.rl.checkpoint_every = 1
    config.eval.max_prompts_per_split = 8
    config.eval.batch_size = 8
    config.eval.attack_steps = (0, 2)
    return config


def test_rl_arms_adds_ablation_arms():
    config = load_config()
    config.eval.ablation = True

    arms = pipeline.rl_arms(config)

    assert arms == [
        "trait_rl",
        "single_trait:honesty",
        "single_trait:humility",
        "single_trait:corrigibility",
    ]


def test_rl_arms_without_ablation_skips_conventional():
    config = load_config()
    config.arms = ("trait_rl", "conventional", "oracle_reward")
    config.eval.ablation = False

    assert pipeline.rl_arms(config) == ["trait_rl", "oracle_reward"]


def test_with_arm_leaves_original_unchanged():
    config = load_config()

    copy = pipeline.with_arm(config, "single_trait:honesty")

    assert copy.arm == "single_trait:honesty"
    assert config.arm == "trait_rl"


def _record(split: str, index: int) -> PromptRecord:
    return PromptRecord(f"{split}-{index}", "p", split, "f", "task", "general", "{}")


def test_attack_records_exclude_training_split():
    records = [_record(split, 0) for split in ("train", "heldout_family", "heldout_attack")]

    assert [r.split for r in pipeline.attack_records(records)] == [
        "heldout_family",
        "heldout_attack",
    ]


def test_pipeline_micro_run_writes_report(tmp_path):
    config = micro_config()
    if SHARED_DATA.is_dir():
        config.eval.public_data_dir = str(SHARED_DATA)

    report_path = pipeline.run_pipeline(config, tmp_path)

    assert report_path == tmp_path / "report.md"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["arms"]) == {"sft", "conventional", "trait_rl"}
    assert set(metrics["reward_accuracy"]) == {"honesty", "humility", "corrigibility"}
    for plot in ("safe_rates.png", "reliability.png", "retention.png"):
        assert (tmp_path / "plots" / plot).stat().st_size > 0
    for phase in ("sft", "reward", "conventional", "rl_trait_rl"):
        assert (tmp_path / phase / "FINAL").is_file()
    text = report_path.read_text()
    assert "Claim 2" in text
    if SHARED_DATA.is_dir():
        assert set(metrics["public_mc"]) == {"sft", "conventional", "trait_rl"}
        assert "truthfulqa_mc1" in metrics["public_mc"]["trait_rl"]


def _record_rl_matmul_dtypes(monkeypatch) -> dict[str, set[str]]:
    """Record the model.matmul_dtype that the RL loop's sampler, reference and update get.

    The real functions still run. Only the RL loop's references to them are wrapped.
    """
    seen = {"sample": set(), "reference": set(), "update": set()}

    def recording(name, fn):
        def wrapper(params, cfg, *args, **kwargs):
            seen[name].add(cfg.matmul_dtype)
            return fn(params, cfg, *args, **kwargs)

        return wrapper

    sampling, rollout, grpo = rl_loop.sampling, rl_loop.rollout, rl_loop.grpo

    def recording_step(cfg, *args, **kwargs):
        seen["update"].add(cfg.matmul_dtype)
        return grpo.make_grpo_step(cfg, *args, **kwargs)

    sample = recording("sample", sampling.sample)
    reference = recording("reference", rollout.reference_logps_BxN)
    monkeypatch.setattr(
        rl_loop, "sampling", types.SimpleNamespace(**{**vars(sampling), "sample": sample})
    )
    monkeypatch.setattr(
        rl_loop,
        "rollout",
        types.SimpleNamespace(**{**vars(rollout), "reference_logps_BxN": reference}),
    )
    monkeypatch.setattr(
        rl_loop, "grpo", types.SimpleNamespace(**{**vars(grpo), "make_grpo_step": recording_step})
    )
    return seen


def test_pipeline_rerun_restores_finished_phases(tmp_path, monkeypatch):
    config = micro_config()
    # The first run also samples its rollouts with bfloat16 matmuls for the float32 learner.
    config.rl.rollout_matmul_dtype = "bfloat16"
    seen = _record_rl_matmul_dtypes(monkeypatch)
    pipeline.run_pipeline(config, tmp_path)
    first = json.loads((tmp_path / "metrics.json").read_text())

    assert seen == {"sample": {"bfloat16"}, "reference": {""}, "update": {""}}
    rl_log = (tmp_path / "rl_trait_rl" / "logs" / "metrics.jsonl").read_text().splitlines()
    ratio_devs = [json.loads(line).get("rl/ratio_max_abs_dev") for line in rl_log]
    ratio_devs = [dev for dev in ratio_devs if dev is not None]
    # In float32 the sampled and the recomputed logps agree to about 1e-6.
    assert len(ratio_devs) == config.rl.steps
    assert min(ratio_devs) > 1e-4

    pipeline.run_pipeline(config, tmp_path)
    second = json.loads((tmp_path / "metrics.json").read_text())

    assert first["arms"] == second["arms"]
    assert first["claims"] == second["claims"]


def test_pipeline_same_seed_gives_identical_metrics(tmp_path):
    config = micro_config()

    pipeline.run_pipeline(config, tmp_path / "first")
    pipeline.run_pipeline(config, tmp_path / "second")

    first = json.loads((tmp_path / "first" / "metrics.json").read_text())
    second = json.loads((tmp_path / "second" / "metrics.json").read_text())
    first.pop("timings")
    second.pop("timings")
    assert first == second
    for arm in ("sft", "conventional", "trait_rl"):
        name = arm + ".jsonl"
        responses = (tmp_path / "first" / "responses" / name).read_text()
        assert responses == (tmp_path / "second" / "responses" / name).read_text()
    for phase in ("sft", "reward", "rl_trait_rl"):
        log = pathlib.Path(phase) / "logs" / "metrics.jsonl"
        assert (tmp_path / "first" / log).read_text() == (tmp_path / "second" / log).read_text()
