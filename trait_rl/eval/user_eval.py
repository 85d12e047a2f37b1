"""Evaluate trained arms on a user's prompt file and attack templates (scripts/evaluate.py)."""

import json
import logging
import pathlib
from collections.abc import Mapping, Sequence

from trait_rl.data import datasets, io_utils, jsonl
from trait_rl.data import world as world_lib
from trait_rl.data.records import PromptRecord
from trait_rl.eval import arms, attack_templates, bootstrap, generate, trait_metrics
from trait_rl.eval.results import EvalResult, safe_by_prompt

QUESTION_TRAITS = ("honesty", "humility", "task")
# The world's held-out prompt families fill the templates, so no filled prompt is a training text.
TEMPLATE_SOURCE_SPLIT = "heldout_family"


def _last_request_role(record: PromptRecord) -> str | None:
    roles = [role for role, _ in attack_templates.split_turns(record.prompt) if role != "assistant"]
    return roles[-1] if roles else None


def template_pools(records: Sequence[PromptRecord]) -> tuple[list, list]:
    """Split held-out prompts into factual questions (ending in a user turn) and oversight
    requests (corrigibility prompts ending in an operator turn)."""
    questions = [
        r for r in records if r.trait in QUESTION_TRAITS and _last_request_role(r) == "user"
    ]
    oversight = [
        r for r in records if r.trait == "corrigibility" and _last_request_role(r) == "operator"
    ]
    return questions, oversight


def filled_attack_prompts(templates, data_config, max_per_template: int = 0) -> list[PromptRecord]:
    """Fill the templates with the held-out prompts of the world built from `data_config`.

    `max_per_template` > 0 fills each template with only the first that many prompts of its pool
    (the world's prompts are shuffled, so a prefix is a fair sample); 0 uses the whole pool.
    """
    if max_per_template < 0:
        raise ValueError(
            f"invalid eval.max_prompts_per_split={max_per_template}; expected >= 0 (0 = all)"
        )
    world = world_lib.build_world(data_config)
    questions, oversight = template_pools(datasets.prompts(world, TEMPLATE_SOURCE_SPLIT))
    if max_per_template:
        questions, oversight = questions[:max_per_template], oversight[:max_per_template]
    return attack_templates.fill_templates(templates, questions, oversight)


def safe_rate_per_family(
    results: Sequence[EvalResult], num_resamples: int, seed: int
) -> dict[str, dict]:
    """Safe rate with its bootstrap interval per prompt family."""
    families: dict[str, list[EvalResult]] = {}
    for r in results:
        families.setdefault(r.record.family, []).append(r)
    return {
        family: {
            "count": len(family_results),
            **bootstrap.bootstrap_mean(
                list(safe_by_prompt(family_results).values()), num_resamples, seed
            ).to_dict(),
        }
        for family, family_results in sorted(families.items())
    }


def check_ground_truth(records: Sequence[PromptRecord], path: str) -> None:
    """Raise ValueError naming `path` and the prompt id when a record cannot be judged.

    Checked before any checkpoint loads, so a bad prompt file fails in seconds, not after the
    first arm has generated.
    """
    for record in records:
        try:
            trait_metrics.prompt_kind(record)
        except ValueError as error:
            raise ValueError(
                f"{path}: {error}. Give every line a ground_truth object whose type is qa, "
                "oversight, correction or escalation, with the fields trait_rl.rewards.judges "
                "reads for that type"
            ) from None


def run(
    checkpoint_dirs: Sequence[str],
    prompts_path: str | None,
    templates_path: str | None,
    output_dir: str | None,
) -> dict:
    """Judge every arm on the prompt file and the filled templates; return the summary dict."""
    user_prompts = jsonl.read_prompts(prompts_path) if prompts_path else []
    check_ground_truth(user_prompts, prompts_path)
    templates = attack_templates.load_templates(templates_path) if templates_path else []
    summary: dict[str, dict] = {}
    for directory in checkpoint_dirs:
        arm = arms.load_arm(directory)
        if arm.name in summary:
            raise ValueError(
                f"two checkpoints load as arm {arm.name!r} ({directory} and an earlier one); "
                "compare runs of the same arm in separate evaluate.py calls"
            )
        eval_config = arm.config.eval
        sets = {"prompts": user_prompts}
        if templates:
            sets["attack_templates"] = filled_attack_prompts(
                templates, arm.config.data, eval_config.max_prompts_per_split
            )
        summary[arm.name] = {}
        for set_name, records in sets.items():
            if not records:
                continue
            logging.info("evaluating arm %s on %d %s", arm.name, len(records), set_name)
            results = generate.evaluate_arm(
                arm.params, arm.model_cfg, arm.tokenizer, records, eval_config, arm.postprocess
            )
            summary[arm.name][set_name] = safe_rate_per_family(
                results, eval_config.bootstrap_samples, arm.config.seed
            )
            if output_dir:
                path = pathlib.Path(output_dir) / f"responses_{arm.name}_{set_name}.jsonl"
                generate.write_responses(path, results)
    if output_dir:
        path = pathlib.Path(output_dir) / "summary.json"
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        io_utils.write_bytes_atomic(path, text.encode("utf-8"))
    return summary


def render_summary(summary: Mapping[str, Mapping]) -> str:
    """Render the summary as one markdown table per evaluated set."""
    sections = []
    for set_name in ("prompts", "attack_templates"):
        rows = [
            f"| {arm} | {family} | {s['count']} | {s['estimate']:.3f} | "
            f"[{s['low']:.3f}, {s['high']:.3f}] |"
            for arm, sets in summary.items()
            for family, s in sets.get(set_name, {}).items()
        ]
        if rows:
            header = f"## {set_name}\n\n| arm | family | prompts | safe rate | 95% interval |\n"
            sections.append(header + "|---|---|---|---|---|\n" + "\n".join(rows))
    return "\n\n".join(sections) + "\n"
