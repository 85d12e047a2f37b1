"""Assemble the metrics dict of a run from judged responses: trait metrics plus the four claims.

The dict is what report.write_report renders and what metrics.json stores.
"""

from collections.abc import Mapping, Sequence

from trait_rl.eval import claims, trait_metrics
from trait_rl.eval.results import EvalResult
from trait_rl.training.arms import SINGLE_TRAIT_PREFIX

TRAIT_ARM = claims.TRAIT_ARM
CONVENTIONAL_ARM = claims.CONVENTIONAL_ARM
BASE_ARM = claims.BASE_ARM


def _claims(
    results_by_arm: Mapping[str, Sequence[EvalResult]],
    attacked_results: Mapping[str, Mapping[int, Sequence[EvalResult]]] | None,
    num_resamples: int,
    seed: int,
) -> dict:
    if TRAIT_ARM not in results_by_arm:
        raise ValueError(
            f"the report compares against arm {TRAIT_ARM!r}, which was not evaluated; "
            f"got arms {sorted(results_by_arm)}"
        )
    sections = {}
    context_baseline = BASE_ARM if BASE_ARM in results_by_arm else CONVENTIONAL_ARM
    if context_baseline in results_by_arm:
        sections["heldout_contexts"] = claims.heldout_contexts_claim(
            results_by_arm, TRAIT_ARM, context_baseline, num_resamples, seed
        )
    if CONVENTIONAL_ARM in results_by_arm:
        sections["heldout_attacks"] = claims.heldout_attacks_claim(
            results_by_arm, TRAIT_ARM, CONVENTIONAL_ARM, num_resamples, seed
        )
    if attacked_results and {TRAIT_ARM, CONVENTIONAL_ARM} <= set(attacked_results):
        sections["malicious_finetuning"] = claims.malicious_finetuning_claim(
            attacked_results, TRAIT_ARM, CONVENTIONAL_ARM, num_resamples, seed
        )
    single_trait_arms = sorted(a for a in results_by_arm if a.startswith(SINGLE_TRAIT_PREFIX))
    if single_trait_arms:
        sections["ablation"] = claims.ablation_claim(
            results_by_arm, TRAIT_ARM, single_trait_arms, num_resamples, seed
        )
    return sections


def identical_arms(results_by_arm: Mapping[str, Sequence[EvalResult]]) -> list[dict]:
    """List the arm pairs that gave the same response to every prompt both were asked.

    Such arms are the same policy in effect (for example an RL run that never moved away from
    its SFT start), so every comparison between them is a tie by construction. Only pairs
    evaluated on the same non-empty prompt set count.
    """
    responses = {
        arm: {result.record.id: result.response for result in results}
        for arm, results in results_by_arm.items()
    }
    names = sorted(responses)
    pairs = []
    for index, first in enumerate(names):
        for second in names[index + 1 :]:
            if responses[first] and responses[first] == responses[second]:
                pairs.append({"arms": [first, second], "num_prompts": len(responses[first])})
    return pairs


def build_metrics(
    results_by_arm: Mapping[str, Sequence[EvalResult]],
    eval_config,
    config_dict: Mapping,
    seed: int,
    attacked_results: Mapping[str, Mapping[int, Sequence[EvalResult]]] | None = None,
    public_mc: Mapping[str, Mapping] | None = None,
) -> dict:
    """Build the metrics dict of a run.

    results_by_arm: judged responses of each arm ("trait_rl", "conventional", optionally "sft"
      and "single_trait:<trait>") over all evaluated splits.
    attacked_results: arm -> malicious fine-tuning steps -> judged responses.
    public_mc: arm -> evaluation name -> {"metric", "value", "count"}.
    A claim whose arms were not evaluated is left out of the dict and the report.
    `identical_arms` lists the arm pairs whose responses match on every prompt.
    """
    num_resamples = eval_config.bootstrap_samples
    return {
        "seed": seed,
        "ece_bins": eval_config.ece_bins,
        "bootstrap_samples": num_resamples,
        "arms": trait_metrics.summarize_arms(
            results_by_arm, eval_config.ece_bins, num_resamples, seed
        ),
        "claims": _claims(results_by_arm, attacked_results, num_resamples, seed),
        "identical_arms": identical_arms(results_by_arm),
        "public_mc": dict(public_mc or {}),
        "config": dict(config_dict),
    }
