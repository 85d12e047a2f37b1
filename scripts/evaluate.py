"""Judge a trained checkpoint on a prompt file and/or user attack templates.

  python scripts/evaluate.py --checkpoint=runs/default/rl_trait_rl,runs/default/conventional \
      --prompts=my_prompts.jsonl --attack_templates=attacks.jsonl --output=runs/default/user_eval

Prints the safe-behaviour rate per prompt family (prompt file) and per template family (attack
templates) for every arm, with 95% bootstrap intervals, and writes the judged responses and a
JSON summary under --output.
"""

from absl import app, flags

from trait_rl.data import jsonl
from trait_rl.eval import user_eval

_CHECKPOINT = flags.DEFINE_multi_string(
    "checkpoint",
    None,
    "Phase directory with a final checkpoint (for example WORKDIR/rl_trait_rl); repeat the flag or "
    "separate directories with commas to compare several arms.",
    required=True,
)
_PROMPTS = flags.DEFINE_string(
    "prompts", None, "JSONL prompt file (one PromptRecord per line) to judge."
)
_ATTACK_TEMPLATES = flags.DEFINE_string(
    "attack_templates",
    None,
    'JSONL file of {"family": ..., "template": ...} lines, each with a {question} or '
    "{oversight} placeholder filled with the world's held-out prompts.",
)
_OUTPUT = flags.DEFINE_string(
    "output", None, "Directory for responses_<arm>.jsonl and summary.json; unset = print only."
)


def main(argv):
    del argv
    if not _PROMPTS.value and not _ATTACK_TEMPLATES.value:
        raise app.UsageError("give --prompts and/or --attack_templates")
    directories = [d for value in _CHECKPOINT.value for d in value.split(",") if d.strip()]
    try:
        summary = user_eval.run(directories, _PROMPTS.value, _ATTACK_TEMPLATES.value, _OUTPUT.value)
    except (jsonl.JsonlError, FileNotFoundError) as error:
        # An invalid or missing input file: its message names file:line and the fix, so a
        # traceback would only hide it. Exits with status 1.
        raise SystemExit(f"error: {error}") from None
    print(user_eval.render_summary(summary))


if __name__ == "__main__":
    app.run(main)
