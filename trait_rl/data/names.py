"""Pronounceable fictional names built from syllables.

Made-up names guarantee that a from-scratch model can only know a fact from the generated corpus,
and that a pretrained model brings no prior knowledge about any entity.
"""

import numpy as np

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr")
_ONSETS += ("gr", "st", "tr", "th", "sh", "h")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "nd", "sh")


def make_name(rng: np.random.Generator, num_syllables: int) -> str:
    """Return one capitalised name of `num_syllables` syllables; only the last has a coda.

    Short open syllables keep names to a few tokens of a small SentencePiece vocabulary.
    """
    parts = []
    for _ in range(num_syllables):
        onset = _ONSETS[rng.integers(len(_ONSETS))]
        vowel = _VOWELS[rng.integers(len(_VOWELS))]
        parts.append(onset + vowel)
    parts.append(_CODAS[rng.integers(len(_CODAS))])
    return "".join(parts).capitalize()


def unique_names(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    """Draw `count` names of two syllables that are not in `taken`, and add them to it.

    `taken` contains lower-cased words, so a name never equals another name or a template word
    in any letter case. That keeps whole-word matching of names in rendered text exact.
    """
    names = []
    while len(names) < count:
        name = make_name(rng, 2)
        if name.lower() in taken:
            continue
        taken.add(name.lower())
        names.append(name)
    return names
