"""The LLaMA SentencePiece tokenizer of the official GLUS / LISA releases, tokenising as they were trained.

The releases ship ``tokenizer.model`` (SentencePiece), ``added_tokens.json`` (``<im_patch>``, ``<im_start>``,
``<im_end>``, ``[SEG]`` after the 32000 pieces), ``tokenizer_config.json`` and ``special_tokens_map.json``, and
the official code tokenises with the *slow* ``LlamaTokenizer`` of transformers 4.31. Its behaviour differs from
the current transformers tokenizers in ways that change the ids, so it is reproduced here on top of the
``sentencepiece`` package:

- the text is split on the added tokens and on ``<s>``/``</s>``/``<unk>``; whitespace next to an added token
  (not next to ``<s>``/``</s>``/``<unk>``) is stripped on both sides;
- every remaining piece is encoded by SentencePiece on its own, so each gets the dummy-prefix ``▁``
  (``legacy: true``, the 4.31 default); with ``legacy: false`` the text gets one leading ``▁`` and a piece
  that follows an added token loses the dummy prefix unless it starts with a space;
- BOS is prepended when ``add_bos_token`` (default true); nothing is added to the vocabulary.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPIECE_UNDERLINE = "\u2581"
MODEL_FILE = "tokenizer.model"
ADDED_TOKENS_FILE = "added_tokens.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
FILES = (MODEL_FILE, ADDED_TOKENS_FILE, CONFIG_FILE, SPECIAL_TOKENS_FILE)


@dataclass
class Encoding:
    """What ``tokenizer(text)`` returns (the field the callers read)."""

    input_ids: list[int]


def _token_text(value: Any) -> str | None:
    """A special token entry of the config files: a string or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"unreadable special token entry {value!r}")


class LlamaSentencePieceTokenizer:
    """Slow LLaMA tokenizer semantics (transformers 4.31) over a ``tokenizer.model`` and ``added_tokens.json``."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.folder = folder
        model_file = folder / MODEL_FILE
        if not model_file.is_file():
            raise FileNotFoundError(f"{folder}: no {MODEL_FILE} (the SentencePiece model of the LLaMA tokenizer)")
        try:
            import sentencepiece
        except ImportError as exc:  # a dependency in requirements.txt; say so plainly
            raise ImportError("the official GLUS tokenizer needs the 'sentencepiece' package") from exc
        self.sp = sentencepiece.SentencePieceProcessor()
        try:
            self.sp.Load(str(model_file))
        except (OSError, RuntimeError) as exc:
            raise ValueError(f"{model_file}: not a SentencePiece model: {exc}") from exc
        config = self._read_json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
        special = self._read_json(folder / SPECIAL_TOKENS_FILE) if (folder / SPECIAL_TOKENS_FILE).is_file() else {}
        self.legacy = bool(config.get("legacy", True))  # None and absent mean the 4.31 default, legacy
        if config.get("legacy") is None:
            self.legacy = True
        self.add_bos_token = bool(config.get("add_bos_token", True))
        self.add_eos_token = bool(config.get("add_eos_token", False))
        if self.add_eos_token:
            raise ValueError(f"{folder / CONFIG_FILE}: add_eos_token is true; the GLUS prompts are built without it")
        names = {key: _token_text(special.get(key, config.get(key))) for key in
                 ("bos_token", "eos_token", "unk_token", "pad_token")}
        self.bos_token = names["bos_token"] or "<s>"
        self.eos_token = names["eos_token"] or "</s>"
        self.unk_token = names["unk_token"] or "<unk>"
        self.pieces = self.sp.GetPieceSize()
        self.added_tokens: dict[str, int] = {}
        added_file = folder / ADDED_TOKENS_FILE
        if added_file.is_file():
            raw = self._read_json(added_file)
            if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
                raise ValueError(f"{added_file}: expected a mapping of token -> id")
            for token, index in sorted(raw.items(), key=lambda kv: kv[1]):
                if index != self.pieces + len(self.added_tokens):
                    raise ValueError(f"{added_file}: {token!r} has id {index}, the next free id is "
                                     f"{self.pieces + len(self.added_tokens)} ({self.pieces} SentencePiece pieces)")
                self.added_tokens[token] = index
        self.added_ids = {v: k for k, v in self.added_tokens.items()}
        self.bos_token_id = self._piece_id(self.bos_token)
        self.eos_token_id = self._piece_id(self.eos_token)
        self.unk_token_id = self._piece_id(self.unk_token)
        # the official inference sets pad_token = unk_token
        self.pad_token = names["pad_token"] or self.unk_token
        self.pad_token_id = self.convert_tokens_to_ids(self.pad_token)
        self.special_tokens = [t for t in (self.bos_token, self.eos_token, self.unk_token)]
        # split points: added tokens (whitespace stripped around them) and the specials (kept), longest first
        self._split = sorted({*self.added_tokens, *self.special_tokens}, key=len, reverse=True)

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON: {exc}") from exc

    def _piece_id(self, piece: str) -> int:
        if piece in self.added_tokens:
            return self.added_tokens[piece]
        return int(self.sp.PieceToId(piece))

    # --- the vocabulary -------------------------------------------------------------------
    def __len__(self) -> int:
        return self.pieces + len(self.added_tokens)

    @property
    def all_special_ids(self) -> list[int]:
        return sorted({self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id})

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        if isinstance(tokens, str):
            if tokens in self.added_tokens:
                return self.added_tokens[tokens]
            index = int(self.sp.PieceToId(tokens))
            return index if self.sp.IdToPiece(index) == tokens else self.unk_token_id
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Iterable[int]) -> Any:
        if isinstance(ids, int):
            return self.added_ids.get(ids) or self.sp.IdToPiece(ids)
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    # --- encoding -------------------------------------------------------------------------
    def _split_text(self, text: str) -> list[str]:
        """The text cut at split tokens, leftmost first (longest token at a position wins)."""
        parts: list[str] = []
        pos = start = 0
        while pos < len(text):
            for token in self._split:
                if text.startswith(token, pos):
                    if pos > start:
                        parts.append(text[start:pos])
                    parts.append(token)
                    pos += len(token)
                    start = pos
                    break
            else:
                pos += 1
        if start < len(text):
            parts.append(text[start:])
        return parts

    def tokenize(self, text: str) -> list[str]:
        """Pieces of ``text`` as the 4.31 slow tokenizer makes them (no BOS)."""
        if not self.legacy:
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        parts = self._split_text(text)
        for i, part in enumerate(parts):
            if part in self.added_tokens:  # plain added tokens eat the whitespace on both sides
                if i + 1 < len(parts) and parts[i + 1] not in self._split:
                    parts[i + 1] = parts[i + 1].lstrip()
                if i > 0 and parts[i - 1] not in self._split:
                    parts[i - 1] = parts[i - 1].rstrip()
        pieces: list[str] = []
        for part in parts:
            if not part:
                continue
            if part in self._split:
                pieces.append(part)
            else:
                pieces.extend(self._encode_piece(part))
        return pieces

    def _encode_piece(self, text: str) -> list[str]:
        if self.legacy:
            return list(self.sp.encode(text, out_type=str))
        is_first = text.startswith(SPIECE_UNDERLINE)
        if is_first:
            text = text[1:]
        tokens = list(self.sp.encode(text, out_type=str))
        if not is_first and not text.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self._piece_id(p) for p in self.tokenize(text)]
        return [self.bos_token_id, *ids] if add_special_tokens and self.add_bos_token else ids

    def __call__(self, text: str, add_special_tokens: bool = True, **_: Any) -> Encoding:
        return Encoding(self.encode(text, add_special_tokens))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Readable text (for logs and answers); added tokens are written out, specials optionally dropped."""
        out: list[str] = []
        run: list[int] = []
        for raw in ids:
            index = int(raw)
            if index in self.added_ids or index in (self.bos_token_id, self.eos_token_id):
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if not (skip_special_tokens and index in (self.bos_token_id, self.eos_token_id)):
                    out.append(self.added_ids.get(index) or self.sp.IdToPiece(index))
            elif 0 <= index < self.pieces:
                run.append(index)
        if run:
            out.append(self.sp.decode(run))
        return " ".join(s for s in out if s)

    def save_pretrained(self, folder: str | Path) -> None:
        """Copy the tokenizer files (so a model saved with it loads the same tokenizer)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            if (self.folder / name).is_file() and (self.folder / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.folder / name, folder / name)


def is_sentencepiece_folder(folder: Path) -> bool:
    """A release folder with the slow LLaMA tokenizer (``tokenizer.model``) and no ``tokenizer.json``."""
    return (folder / MODEL_FILE).is_file()
