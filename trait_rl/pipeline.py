"""The main job: from nothing to a report, every phase under one work directory.

Training runs first: world data and tokenizer, base SFT, reward model, conventional baseline,
and one RL run per arm (with the single-trait ablation arms when `eval.ablation`). Then every arm
is evaluated on every split, the aligned arms get the malicious fine-tuning attack, and the
report is written. A phase whose final checkpoint exists is restored instead of retrained, so an
interrupted pipeline resumes.
"""

import json
import logging
import os
import pathlib
import time

import jax
import ml_collections

from trait_rl import TRAITS, configuration
from trait_rl.data import public_evals
from trait_rl.data.records import PromptRecord
from trait_rl.data.world_data import PROMPT_SPLITS, WorldData, load_world_data
from trait_rl.eval import generate, malicious, multiple_choice, report, summary
from trait_rl.eval.arms import conventional_filter
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import checkpoints, phase
from trait_rl.training.metrics import MetricWriter

BASE_ARM = "sft"
CONVENTIONAL_ARM = "conventional"
# Arms whose resistance to malicious fine-tuning is measured (claim 3).
ATTACKED_ARMS = ("trait_rl", CONVENTIONAL_ARM)


def rl_arms(config: ml_collections.ConfigDict) -> list[str]:
    """Return the arms trained by RL: config.arms without the conventional one, plus ablations."""
    arms = [arm for arm in config.arms if arm != CONVENTIONAL_ARM]
    if config.eval.ablation:
        arms += [f"single_trait:{trait}" for trait in TRAITS if f"single_trait:{trait}" not in arms]
    return arms


def with_arm(config: ml_collections.ConfigDict, arm: str) -> ml_collections.ConfigDict:
    """Return a copy of `config` whose `arm` field is `arm`."""
    copy = ml_collections.ConfigDict(config.to_dict())
    copy.arm = arm
    return copy


def evaluation_records(data: WorldData, max_per_split: int) -> list[PromptRecord]:
    """Return the prompts evaluated for every arm: each split, capped at `max_per_split`."""
    records = []
    for split in PROMPT_SPLITS:
        split_records = data.prompts[split]
        records += split_records[:max_per_split] if max_per_split else split_records
    return records


def attack_records(records: list[PromptRecord]) -> list[PromptRecord]:
    """Return the prompts the malicious fine-tuning curve is measured on: the held-out splits."""
    return [record for record in records if record.split != "train"]


def train_all(config, workdir, config_arg: str) -> dict:
    """Run (or restore) every training phase; return the final params of each arm by name."""
    params = {BASE_ARM: phase.run_phase(config, workdir, "sft", config_arg)}
    phase.run_phase(config, workdir, "reward", config_arg)
    params[CONVENTIONAL_ARM] = phase.run_phase(config, workdir, "conventional", config_arg)
    for arm in rl_arms(config):
        logging.info("RL arm %s", arm)
        params[arm] = phase.run_phase(with_arm(config, arm), workdir, "rl", config_arg)
    return params


def evaluate_all(config, params_by_arm, model_cfg, tokenizer, records) -> dict:
    """Judge greedy responses of every arm on `records`; the conventional arm keeps its filter."""
    results = {}
    for arm, params in params_by_arm.items():
        start = time.perf_counter()
        postprocess = conventional_filter if arm == CONVENTIONAL_ARM else None
        results[arm] = generate.evaluate_arm(
            params, model_cfg, tokenizer, records, config.eval, postprocess
        )
        logging.info("evaluated %s on %d prompts in %.1fs", arm, len(records),
                     time.perf_counter() - start)  # fmt: skip
    return results


def attack_all(config, params_by_arm, model_cfg, tokenizer, records, data, mesh, writer) -> dict:
    """Fine-tune each aligned arm on the malicious set; judged responses per attack step count."""
    attacked = {}
    for arm in ATTACKED_ARMS:
        if arm not in params_by_arm:
            continue
        postprocess = conventional_filter if arm == CONVENTIONAL_ARM else None
        attacked[arm] = malicious.retention_results(
            config, model_cfg, params_by_arm[arm], tokenizer, records, data.malicious, mesh,
            postprocess, writer, prefix=f"attack/{arm}",
        )  # fmt: skip
    return attacked


def public_multiple_choice(config, params_by_arm, model_cfg, tokenizer) -> dict:
    """Score every arm on the public multiple-choice files in `eval.public_data_dir`, if set.

    A from-scratch model trained on the trait world has seen none of these questions, so its
    scores sit near chance. They are meaningful for a model started from a pretrained checkpoint.
    """
    if not config.eval.public_data_dir:
        return {}
    evals = public_evals.load_public_evals(config.eval.public_data_dir)
    scores = {}
    for arm, params in params_by_arm.items():
        scores[arm] = multiple_choice.evaluate_public_mc(
            multiple_choice.model_logps_fn(params, model_cfg),
            tokenizer,
            evals,
            model_cfg.max_len,
            config.eval.batch_size,
            max_items=config.eval.max_prompts_per_split,
        )
    return scores


def write_responses(workdir: pathlib.Path, results_by_arm: dict) -> None:
    """Write every arm's judged responses to WORKDIR/responses/<arm>.jsonl."""
    directory = workdir / "responses"
    directory.mkdir(parents=True, exist_ok=True)
    for arm, results in results_by_arm.items():
        generate.write_responses(directory / f"{arm.replace(':', '_')}.jsonl", results)


def run_pipeline(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    config_arg: str = "configs/default.py",
) -> pathlib.Path:
    """Run every phase, evaluate every arm and write WORKDIR/report.md; return its path."""
    configuration.validate(config, jax.device_count())
    workdir = pathlib.Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    timings = {}

    start = time.perf_counter()
    params_by_arm = train_all(config, workdir, config_arg)
    timings["train_seconds"] = time.perf_counter() - start

    data = load_world_data(config.data, workdir)
    tokenizer = phase.load_or_train_tokenizer(config, workdir, data, "eval")
    model_cfg = phase.model_config(config, tokenizer)
    mesh = mesh_lib.make_mesh(config.mesh)
    records = evaluation_records(data, config.eval.max_prompts_per_split)

    start = time.perf_counter()
    results_by_arm = evaluate_all(config, params_by_arm, model_cfg, tokenizer, records)
    write_responses(workdir, results_by_arm)
    timings["eval_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    with MetricWriter(workdir / "attack" / "logs", enabled=jax.process_index() == 0) as writer:
        attacked = attack_all(
            config, params_by_arm, model_cfg, tokenizer, attack_records(records), data, mesh, writer
        )
    timings["attack_seconds"] = time.perf_counter() - start

    public_mc = public_multiple_choice(config, params_by_arm, model_cfg, tokenizer)
    config_dict = json.loads(config.to_json_best_effort())
    metrics = summary.build_metrics(
        results_by_arm,
        config.eval,
        config_dict,
        config.seed,
        attacked_results=attacked,
        public_mc=public_mc,
    )
    metrics["timings"] = timings
    metrics["reward_accuracy"] = reward_accuracy(workdir)
    return report.write_report(workdir, metrics)


def reward_accuracy(workdir: pathlib.Path) -> dict[str, float]:
    """Read the reward model's held-out pairwise accuracy per trait from its metric log."""
    path = checkpoints.phase_dir(workdir, "reward") / "logs" / "metrics.jsonl"
    accuracy = {}
    if not path.is_file():
        return accuracy
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith("reward/accuracy/"):
                accuracy[key.removeprefix("reward/accuracy/")] = value
    return accuracy
