"""Judge a trained checkpoint on a prompt file and/or user attack templates.

  python scripts/evaluate.py --checkpoint=WORKDIR/rl_trait_rl,WORKDIR/conventional \
      --prompts=my_prompts.jsonl --attack_templates=attacks.jsonl --output=WORKDIR/user_eval

Prints the safe-behaviour rate per prompt family (prompt file) and per template family (attack
templates) for every arm, with 95% bootstrap intervals. With --output it writes
responses_<arm>_<set>.jsonl (set: prompts or attack_templates) and summary.json there, only
after every arm has finished. Every prompt line needs a `ground_truth`; README.md lists its
fields per type.
"""

from absl import app, flags

from trait_rl import cli
from trait_rl.eval import user_eval

_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint",
    None,
    "Phase directory with a final checkpoint (for example WORKDIR/rl_trait_rl); repeat the flag or "
    "separate directories with commas to compare several arms.",
    required=True,
)
_PROMPTS = flags.DEFINE_string(
    "prompts",
    None,
    "JSONL prompt file to judge: one object per line with `prompt` and `ground_truth`.",
)
_ATTACK_TEMPLATES = flags.DEFINE_string(
    "attack_templates",
    None,
    'JSONL file of {"family": ..., "template": ...} lines, each with a {question} or '
    "{oversight} placeholder filled with the world's held-out prompts.",
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "Directory for responses_<arm>_<set>.jsonl and summary.json; unset = print only.",
)


def main(argv):
    del argv
    if not _PROMPTS.value and not _ATTACK_TEMPLATES.value:
        raise app.UsageError("give --prompts and/or --attack_templates")
    directories = [d for value in _CHECKPOINT.value for d in value.split(",") if d.strip()]
    summary = user_eval.run(directories, _PROMPTS.value, _ATTACK_TEMPLATES.value, _OUTPUT.value)
    print(user_eval.render_summary(summary))


if __name__ == "__main__":
    cli.run(main)
