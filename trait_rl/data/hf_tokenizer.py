"""A Hugging Face `tokenizer.json` behind the same interface as `trait_rl.data.tokenizer.Tokenizer`.

Needs the `tokenizers` package (the `[hf]` extra); finding the special ids does not.

Differences from the project's SentencePiece tokenizer that callers should know:
- `pad_id` is 0 because the pipeline fills padding with 0, but in a pretrained vocabulary id 0
  is an ordinary token (for example "!" in GPT-2). Padding is always carried by the masks, so
  nothing reads id 0 as padding; `decode` keeps it.
- The chat role markers are not single tokens: they are encoded as ordinary text.
- A vocabulary without a separate begin-of-sequence token (GPT-2, Qwen2) uses its
  end-of-sequence id for both, which is how those models were trained.
"""

import json
import os
import pathlib
from collections.abc import Iterable

TOKENIZER_FILE = "tokenizer.json"
# Written next to a converted checkpoint, so loading it needs no Hugging Face config files.
SPECIAL_IDS_FILE = "special_ids.json"
PAD_ID = 0


class HFTokenizer:
    """A loaded `tokenizers.Tokenizer` with fixed bos, eos and pad ids."""

    def __init__(self, tokenizer, bos_id: int, eos_id: int, path: pathlib.Path | None = None):
        self._tokenizer = tokenizer
        self._bos_id = int(bos_id)
        self._eos_id = int(eos_id)
        self.path = path
        for name, token_id in (("eos_id", self._eos_id), ("bos_id", self._bos_id)):
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(
                    f"{name}={token_id} is outside the vocabulary of {path} "
                    f"({self.vocab_size} tokens); fix the special ids in its config"
                )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HFTokenizer":
        """Load `tokenizer.json` from a Hugging Face model directory or a converted checkpoint."""
        try:
            import tokenizers
        except ImportError as error:
            raise ImportError(
                "reading tokenizer.json needs the `tokenizers` package: "
                "pip install -e '.[hf]' (install the CPU torch wheel first)"
            ) from error
        directory = pathlib.Path(directory)
        path = directory / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; save a fast tokenizer there with "
                "AutoTokenizer.from_pretrained(...).save_pretrained(DIR)"
            )
        bos_id, eos_id = resolve_special_ids(directory)
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as error:  # The Rust bindings raise a bare Exception on parse errors.
            raise ValueError(f"{path} is not a valid tokenizer.json: {error}") from error
        return cls(tokenizer, bos_id, eos_id, path)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return self._bos_id

    @property
    def eos_id(self) -> int:
        return self._eos_id

    def encode(self, text: str) -> list[int]:
        """Encode text to ids without bos or eos (the callers add them)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; special tokens such as bos and eos decode to nothing."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)


def resolve_special_ids(directory: str | os.PathLike) -> tuple[int, int]:
    """Return (bos_id, eos_id) of a tokenizer directory.

    Sources, first match wins: `special_ids.json` (a converted checkpoint), then the
    `bos_token_id`/`eos_token_id` fields of `config.json` and `generation_config.json`, then the
    `bos_token`/`eos_token` strings of `tokenizer_config.json` looked up in `tokenizer.json`.
    A list of eos ids (Llama 3 chat models) gives its first entry. A missing bos uses the eos id.
    """
    directory = pathlib.Path(directory)
    saved = _read_json(directory / SPECIAL_IDS_FILE)
    if saved:
        return int(saved["bos_id"]), int(saved["eos_id"])
    eos_id = _find_special_id(directory, "eos")
    if eos_id is None:
        raise ValueError(
            f"no end-of-sequence token found in {directory}: set eos_token_id in config.json "
            "or eos_token in tokenizer_config.json"
        )
    bos_id = _find_special_id(directory, "bos")
    return (eos_id if bos_id is None else bos_id), eos_id


def write_special_ids(directory: str | os.PathLike, bos_id: int, eos_id: int) -> pathlib.Path:
    """Write `special_ids.json`, which `resolve_special_ids` reads first."""
    path = pathlib.Path(directory) / SPECIAL_IDS_FILE
    path.write_text(json.dumps({"bos_id": int(bos_id), "eos_id": int(eos_id)}, indent=2) + "\n")
    return path


def _find_special_id(directory: pathlib.Path, kind: str) -> int | None:
    for name in ("config.json", "generation_config.json"):
        value = _read_json(directory / name).get(f"{kind}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    token = _read_json(directory / "tokenizer_config.json").get(f"{kind}_token")
    if isinstance(token, dict):
        token = token.get("content")
    if not token:
        return None
    return _token_to_id(directory / TOKENIZER_FILE, token)


def _token_to_id(path: pathlib.Path, token: str) -> int | None:
    """Look a token up in tokenizer.json's added tokens, then in its model vocabulary."""
    spec = _read_json(path)
    for added in spec.get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    vocab = spec.get("model", {}).get("vocab")
    if isinstance(vocab, dict) and token in vocab:
        return int(vocab[token])
    return None


def _read_json(path: pathlib.Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error
