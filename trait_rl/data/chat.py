"""Chat format shared by the data, the tokenizer and the samplers.

A conversation is rendered as one string of turns, each opened by a role marker. The role markers
are single tokens in the tokenizer. An assistant turn ends with the tokenizer's end-of-sequence
token, which is added as an id when tokenizing and is never part of the text.
"""

from collections.abc import Sequence

OPERATOR = "<|operator|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
ROLE_MARKERS = (OPERATOR, USER, ASSISTANT)
ROLES = {"operator": OPERATOR, "user": USER, "assistant": ASSISTANT}


def render_turn(role: str, text: str) -> str:
    """Render one turn as its role marker followed by the text."""
    if role not in ROLES:
        raise ValueError(f"unknown chat role {role!r}; expected one of {sorted(ROLES)}")
    return f"{ROLES[role]} {text.strip()}"


def render_prompt(turns: Sequence[tuple[str, str]]) -> str:
    """Render earlier turns and open an assistant turn for the model to complete.

    Earlier assistant turns are rendered as text; the caller decides whether they end a turn.
    """
    rendered = [render_turn(role, text) for role, text in turns]
    rendered.append(ASSISTANT)
    return " ".join(rendered)
