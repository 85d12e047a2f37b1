"""SentencePiece tokenizer trained on the trait world, lossless for any UTF-8 text.

Training settings that make encode/decode an exact round trip:
- normalization rule `identity`, no extra-whitespace removal and no dummy prefix, so repeated
  spaces, tabs, newlines and leading spaces survive unchanged;
- byte fallback, so characters never seen in training (emoji, CJK, control characters) are
  encoded as their UTF-8 bytes instead of `<unk>`.

SentencePiece stores spaces as U+2581 (`▁`) and turns every `▁` back into a space when decoding,
so a literal `▁` in the input would come back as a space. `encode` therefore writes each literal
`▁` as its three byte-fallback ids, which decode to `▁` itself.

Ids 0-3 are fixed: pad, unk, bos, eos. The chat role markers follow as user-defined symbols, so
each is one token wherever it appears in the text.
"""

import io
import os
import pathlib
from collections.abc import Iterable

import sentencepiece as spm

from trait_rl.data import chat, io_utils

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
# Pieces that must not be split, in id order after the four control ids.
USER_DEFINED_SYMBOLS = chat.ROLE_MARKERS

_SPACE_SYMBOL = "\u2581"
# Below this the trainer cannot hold the 256 byte pieces, the fixed ids and the role markers.
MIN_VOCAB_SIZE = 256 + 4 + len(USER_DEFINED_SYMBOLS) + 1


class Tokenizer:
    """A loaded SentencePiece model with the project's fixed special ids."""

    def __init__(self, processor: spm.SentencePieceProcessor, path: pathlib.Path | None = None):
        self._sp = processor
        self.path = path
        self._space_symbol_ids = [
            processor.piece_to_id(f"<0x{b:02X}>") for b in _SPACE_SYMBOL.encode()
        ]
        self._check_special_ids()

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        """Load a `.model` file written by `train_tokenizer`."""
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer model not found at {path}; train one with "
                "trait_rl.data.tokenizer.train_tokenizer or check the path"
            )
        try:
            processor = spm.SentencePieceProcessor(model_proto=path.read_bytes())
        except RuntimeError as error:
            raise ValueError(
                f"{path} is not a SentencePiece model ({error}); retrain it with train_tokenizer"
            ) from error
        return cls(processor, path)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    def marker_id(self, marker: str) -> int:
        """Return the single id of a chat role marker such as `chat.USER`."""
        if marker not in USER_DEFINED_SYMBOLS:
            raise ValueError(
                f"{marker!r} is not a role marker; expected one of {USER_DEFINED_SYMBOLS}"
            )
        return self._sp.piece_to_id(marker)

    def encode(self, text: str) -> list[int]:
        """Encode text to ids without bos or eos; `decode(encode(text)) == text` for any str."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        segments = text.split(_SPACE_SYMBOL)
        ids = self._sp.encode(segments[0])
        for segment in segments[1:]:
            ids.extend(self._space_symbol_ids)
            ids.extend(self._sp.encode(segment))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; pad, bos and eos decode to nothing."""
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def _check_special_ids(self) -> None:
        expected = {"<pad>": PAD_ID, "<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}
        for piece, token_id in expected.items():
            if self._sp.piece_to_id(piece) != token_id:
                raise ValueError(
                    f"tokenizer {self.path} has {piece} at id {self._sp.piece_to_id(piece)}, "
                    f"expected {token_id}; retrain it with trait_rl.data.tokenizer.train_tokenizer"
                )
        missing = [m for m in USER_DEFINED_SYMBOLS if self._sp.piece_to_id(m) == UNK_ID]
        if missing or not self._sp.IsByte(self._space_symbol_ids[0]):
            raise ValueError(
                f"tokenizer {self.path} lacks role markers {missing} or byte fallback; "
                "retrain it with trait_rl.data.tokenizer.train_tokenizer"
            )


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    path: str | os.PathLike,
    model_type: str = "unigram",
) -> Tokenizer:
    """Train a tokenizer on `texts`, write it atomically to `path` and return it.

    `vocab_size` is an upper bound: on a small corpus the trainer stops when no more pieces are
    worth adding, so read the actual size from `Tokenizer.vocab_size`. Training runs on one thread
    so the same texts give a byte-identical model file.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small; byte fallback needs at least {MIN_VOCAB_SIZE}"
        )
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"model_type={model_type!r} is invalid; expected 'unigram' or 'bpe'")
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=_nonempty(texts),
        model_writer=model_bytes,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        model_type=model_type,
        byte_fallback=True,
        character_coverage=1.0,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        user_defined_symbols=list(USER_DEFINED_SYMBOLS),
        max_sentence_length=1 << 16,
        num_threads=1,
        minloglevel=2,
    )
    path = io_utils.write_bytes_atomic(path, model_bytes.getvalue())
    return Tokenizer.load(path)


def _nonempty(texts: Iterable[str]) -> Iterable[str]:
    """Yield the non-empty texts, failing on anything that is not a str."""
    count = 0
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"training text {index} is {type(text).__name__}, expected str")
        if text:
            count += 1
            yield text
    if count == 0:
        raise ValueError("train_tokenizer received no non-empty texts; pass the corpus texts")
