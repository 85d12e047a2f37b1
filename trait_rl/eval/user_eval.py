"""Evaluate trained arms on a user's prompt file and attack templates (scripts/evaluate.py)."""

import json
import logging
import os
import pathlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence

from trait_rl.data import datasets, io_utils, jsonl
from trait_rl.data import world as world_lib
from trait_rl.data.records import PromptRecord
from trait_rl.eval import arms, attack_templates, bootstrap, generate
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


def check_output_dir(output_dir: str | None) -> None:
    """Raise NotADirectoryError when `--output` names an existing file."""
    if output_dir and pathlib.Path(output_dir).exists() and not pathlib.Path(output_dir).is_dir():
        raise NotADirectoryError(
            f"--output={output_dir} is an existing file, not a directory; choose a directory path"
        )


def load_arms(checkpoint_dirs: Sequence[str]) -> list[arms.LoadedArm]:
    """Load every arm before any generation, so a bad or repeated checkpoint fails first."""
    seen: dict[pathlib.Path, str] = {}
    for directory in checkpoint_dirs:
        resolved = pathlib.Path(directory).resolve()
        if resolved in seen:
            raise ValueError(
                f"--checkpoint {directory} is given twice (first as {seen[resolved]}); "
                "list each phase directory once"
            )
        seen[resolved] = directory
    loaded: dict[str, str] = {}
    result = []
    for directory in checkpoint_dirs:
        arm = arms.load_arm(directory)
        if arm.name in loaded:
            raise ValueError(
                f"--checkpoint {directory} and {loaded[arm.name]} both load as arm {arm.name!r}; "
                "compare runs of the same arm in separate evaluate.py calls"
            )
        loaded[arm.name] = directory
        result.append(arm)
    return result


def _publish(stage: pathlib.Path, output_dir: pathlib.Path) -> None:
    """Move the finished files of `stage` into `output_dir` (each rename is atomic)."""
    if not output_dir.exists():
        os.rename(stage, output_dir)
        return
    for path in sorted(stage.iterdir()):
        os.replace(path, output_dir / path.name)
    stage.rmdir()


def run(
    checkpoint_dirs: Sequence[str],
    prompts_path: str | None,
    templates_path: str | None,
    output_dir: str | None,
) -> dict:
    """Judge every arm on the prompt file and the filled templates; return the summary dict.

    Inputs, the output path and all checkpoints are checked before the first generation. The
    files are written into a temporary directory next to `output_dir` and moved into it only
    when every arm is done, so a failed run leaves no partial output.
    """
    check_output_dir(output_dir)
    user_prompts = (
        jsonl.read_prompts(prompts_path, require_ground_truth=True) if prompts_path else []
    )
    templates = attack_templates.load_templates(templates_path) if templates_path else []
    loaded_arms = load_arms(checkpoint_dirs)
    stage = None
    if output_dir:
        output = pathlib.Path(output_dir)
        output.parent.mkdir(parents=True, exist_ok=True)
        stage = pathlib.Path(
            tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
        )
    try:
        summary = {
            arm.name: _evaluate_arm(arm, user_prompts, templates, stage) for arm in loaded_arms
        }
        if stage is not None:
            text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
            io_utils.write_bytes_atomic(stage / "summary.json", text.encode("utf-8"))
            _publish(stage, pathlib.Path(output_dir))
    finally:
        if stage is not None and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return summary


def _evaluate_arm(arm, user_prompts, templates, stage: pathlib.Path | None) -> dict:
    """Generate and judge one arm on each set; write its responses into `stage` when given."""
    eval_config = arm.config.eval
    sets = {"prompts": user_prompts}
    if templates:
        sets["attack_templates"] = filled_attack_prompts(
            templates, arm.config.data, eval_config.max_prompts_per_split
        )
    arm_summary = {}
    for set_name, records in sets.items():
        if not records:
            continue
        logging.info("evaluating arm %s on %d %s", arm.name, len(records), set_name)
        results = generate.evaluate_arm(
            arm.params, arm.model_cfg, arm.tokenizer, records, eval_config, arm.postprocess
        )
        arm_summary[set_name] = safe_rate_per_family(
            results, eval_config.bootstrap_samples, arm.config.seed
        )
        if stage is not None:
            generate.write_responses(stage / f"responses_{arm.name}_{set_name}.jsonl", results)
    return arm_summary


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
