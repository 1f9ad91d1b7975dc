"""Turning (context frames, query frames, expression) into the token sequence GLUS reads.

Order (GLUS Sec. 4.1, causal): context frames first, then the query frames, then the expression;
the answer holds one [SEG] per query frame. Each frame placeholder expands to the frame's visual
tokens, as LLaVA's processor does.

Grounded answers (GLaMM) instead mark phrases, ``<p>two red circles</p> [SEG] move right``: a phrase has
ONE [SEG] that stands for it in every query frame of the window, and the question may hold ``<region>``
tokens. :func:`parse_answer` reads any answer, generated or not, back into text and phrases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from glus_ros.model.config import VLMConfig
from glus_ros.model.region import REGION_TOKEN
from glus_ros.model.tokenizer import EXTRA_SPECIAL_TOKENS, IMAGE_TOKEN, SEG_TOKEN

IGNORE_INDEX = -100
# grounded answers mark phrases GLaMM's way, "<p>a red cup</p> [SEG]"; a question may hold REGION_TOKEN
PHRASE_START = "<p>"
PHRASE_END = "</p>"


@dataclass
class EncodedPrompt:
    input_ids: torch.Tensor     # (L,)
    labels: torch.Tensor        # (L,) answer tokens, IGNORE_INDEX elsewhere
    num_frames: int             # image placeholders, each expanded to tokens_per_frame ids


def clean_expression(expression: str, max_chars: int = 400, allowed_tokens: Sequence[str] = ()) -> str:
    """Validate a referring expression: non-empty, bounded, no reserved tokens that would hijack the prompt.

    ``allowed_tokens`` lifts the ban for tokens the caller fills in itself (``<region>`` of a question).
    """
    if not isinstance(expression, str):
        raise ValueError(f"expression must be a string, got {type(expression).__name__}")
    text = " ".join(expression.split())
    if not text:
        raise ValueError("empty expression: say which object to segment, e.g. 'the red mug'")
    if len(text) > max_chars:
        raise ValueError(f"expression too long ({len(text)} characters, at most {max_chars})")
    for token in (IMAGE_TOKEN, SEG_TOKEN, *EXTRA_SPECIAL_TOKENS):
        if token in text and token not in allowed_tokens:
            raise ValueError(f"expression contains the reserved token {token!r}")
    return text


def clean_question(question: str, max_chars: int = 400) -> str:
    """A question or instruction for a grounded answer: like an expression, but ``<region>`` tokens may appear."""
    return clean_expression(question, max_chars, allowed_tokens=(REGION_TOKEN,))


class PromptBuilder:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, cfg: VLMConfig, max_expression_tokens: int = 96) -> None:
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.max_expression_tokens = max_expression_tokens
        self.image_id = self._token_id(IMAGE_TOKEN)
        self.seg_id = self._token_id(SEG_TOKEN)

    def _token_id(self, token: str) -> int:
        idx = self.tokenizer.convert_tokens_to_ids(token)
        if idx is None or idx == self.tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {token!r} token")
        return int(idx)

    def answer_text(self, num_query: int) -> str:
        return self.cfg.answer_template.format(seg=" ".join([SEG_TOKEN] * num_query))

    def encode(self, expression: str, num_context: int, num_query: int, answer: str | None = None,
               query_frames_shown: int | None = None) -> EncodedPrompt:
        """Token ids for one sample; ``answer`` defaults to one [SEG] per query frame.

        ``query_frames_shown`` (default ``num_query``) placeholders for query frames; 0 is the
        global-only ablation, where the MLLM sees context frames only but still answers per query frame.
        """
        shown = num_query if query_frames_shown is None else query_frames_shown
        text = clean_expression(expression)
        answer = self.answer_text(num_query) if answer is None else answer
        return self._join(self._prefix_ids(text, num_context, shown), self._answer_ids(answer), num_context + shown)

    def encode_grounded(self, question: str, num_context: int, num_query: int, answer: str | None = None,
                        query_frames_shown: int | None = None,
                        answer_ids: Sequence[int] | None = None) -> EncodedPrompt:
        """Like :meth:`encode` for a question that may hold ``<region>`` tokens and a free-form answer.

        ``answer_ids`` (without the final ``</s>``) replace ``answer`` when the exact tokens matter, e.g. to
        teacher-force a generated answer again; with neither, the answer is one [SEG] per query frame.
        """
        shown = num_query if query_frames_shown is None else query_frames_shown
        text = clean_question(question)
        if answer_ids is not None:
            ids = [int(i) for i in answer_ids]
            forbidden = {self.image_id, self._token_id(REGION_TOKEN)}
            if forbidden & set(ids):
                raise ValueError("an answer may not hold <image> or <region> tokens")
            tokens = [*ids, self.tokenizer.eos_token_id]
        else:
            answer = self.answer_text(num_query) if answer is None else answer
            for token in (IMAGE_TOKEN, REGION_TOKEN):
                if token in answer:
                    raise ValueError(f"an answer may not hold the token {token!r}: {answer!r}")
            tokens = self._answer_ids(answer)
        return self._join(self._prefix_ids(text, num_context, shown), tokens, num_context + shown)

    def prefix_ids(self, question: str, num_context: int, num_query: int,
                   query_frames_shown: int | None = None) -> torch.Tensor:
        """The prompt up to the answer (what generation continues from); the question may hold ``<region>``."""
        shown = num_query if query_frames_shown is None else query_frames_shown
        return torch.tensor(self._prefix_ids(clean_question(question), num_context, shown))

    def _prefix_ids(self, text: str, num_context: int, shown: int) -> list[int]:
        """BOS + template with frame placeholders expanded to ``tokens_per_frame`` ids each."""
        n_expr = len(self.tokenizer(text, add_special_tokens=False).input_ids)
        if n_expr > self.max_expression_tokens:
            raise ValueError(f"expression too long ({n_expr} tokens, at most {self.max_expression_tokens})")
        prefix = self.cfg.prompt_template.split("{answer}")[0].format(
            context="".join([self.cfg.context_frame_template] * num_context),
            query="".join([self.cfg.query_frame_template] * shown),
            expression=text,
        )
        tok = self.tokenizer
        prefix_ids = tok(prefix, add_special_tokens=False).input_ids
        frames = prefix_ids.count(self.image_id)
        if frames != num_context + shown:
            raise ValueError(f"prompt template produced {frames} frame placeholders, expected "
                             f"{num_context + shown}: check prompt_template / frame templates")
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        ids: list[int] = []
        for t in bos + prefix_ids:
            ids.extend([t] * self.cfg.tokens_per_frame if t == self.image_id else [t])
        return ids

    def _answer_ids(self, answer: str) -> list[int]:
        return [*self.tokenizer(answer, add_special_tokens=False).input_ids, self.tokenizer.eos_token_id]

    @staticmethod
    def _join(prefix: list[int], answer: list[int], frames: int) -> EncodedPrompt:
        labels = [IGNORE_INDEX] * len(prefix) + answer
        return EncodedPrompt(torch.tensor(prefix + answer), torch.tensor(labels), frames)

    def word_mask(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, L) True at the prompt's text tokens: not frames, BOS, padding or the answer."""
        words = mask.bool() & (labels.to(ids.device) == IGNORE_INDEX) & (ids != self.image_id)
        if self.tokenizer.bos_token_id is not None:
            words &= ids != self.tokenizer.bos_token_id
        return words

    def batch(self, prompts: list[EncodedPrompt]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-pad to one (B, L) batch: ids, attention mask, labels."""
        length = max(len(p.input_ids) for p in prompts)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        labels = torch.full((len(prompts), length), IGNORE_INDEX, dtype=torch.long)
        for i, p in enumerate(prompts):
            n = len(p.input_ids)
            ids[i, :n], mask[i, :n], labels[i, :n] = p.input_ids, 1, p.labels
        return ids, mask, labels


# --- grounded answers -------------------------------------------------------------------------
_SPACES = re.compile(r"\s+")
_NO_SPACE_BEFORE = ",.;:!?)"


@dataclass
class AnswerPhrase:
    """A span of the plain answer text; ``seg_index`` is the answer's [SEG] that grounds it (None: no mask)."""

    text: str
    start: int
    end: int
    seg_index: int | None


@dataclass
class ParsedAnswer:
    """An answer read token by token: plain text (markers removed), its phrases, and what had to be repaired.

    Model output is not guaranteed to be well formed, so parsing never fails; it repairs and says so in
    ``issues``: a ``</p>`` without ``<p>`` is dropped; a ``<p>`` inside an open phrase closes the open one;
    a [SEG] inside an open phrase closes it and grounds it; a [SEG] with no phrase right before it (only
    whitespace may separate them) grounds an empty phrase at that position (LISA style "it is [SEG].");
    a phrase never followed by a [SEG], or still open at the end, stays in the text without a mask; empty
    phrases are dropped; other special tokens are skipped; everything after ``</s>`` is ignored.
    """

    text: str
    phrases: list[AnswerPhrase]
    num_seg: int
    issues: list[str] = field(default_factory=list)

    @property
    def grounded(self) -> list[AnswerPhrase]:
        """Phrases with a mask, in the order of their [SEG] tokens."""
        return sorted((p for p in self.phrases if p.seg_index is not None), key=lambda p: p.seg_index or 0)

    def marked(self) -> str:
        """The text with GLaMM markers put back: ``<p>phrase</p> [SEG]`` (an empty phrase: `` [SEG]``)."""
        out, pos = [], 0
        for p in sorted(self.phrases, key=lambda p: (p.start, p.end)):
            out.append(self.text[pos:p.start])
            if p.start == p.end:  # an empty phrase always has its [SEG] (empty ones without are dropped)
                out.append(f" {SEG_TOKEN}" if "".join(out) else SEG_TOKEN)
            else:
                seg = f" {SEG_TOKEN}" if p.seg_index is not None else ""
                out.append(f"{PHRASE_START}{p.text}{PHRASE_END}{seg}")
            pos = p.end
        out.append(self.text[pos:])
        return "".join(out)


class _AnswerReader:
    """State of :func:`parse_answer` (plain text never ends with a space; one is added when text follows)."""

    def __init__(self) -> None:
        self.plain = ""
        self.space = False
        self.phrases: list[AnswerPhrase] = []
        self.issues: list[str] = []
        self.open_at: int | None = None
        self.pending: AnswerPhrase | None = None
        self.pending_mark = -1
        self.num_seg = 0

    def add_text(self, piece: str) -> None:
        piece = _SPACES.sub(" ", piece)
        if piece.startswith(" "):
            self.space = True
        body = piece.strip(" ")
        if not body:
            return
        if self.plain and self.space and body[0] not in _NO_SPACE_BEFORE:
            self.plain += " "
        self.plain += body
        self.space = piece.endswith(" ")

    def close(self) -> AnswerPhrase | None:
        start = self.open_at if self.open_at is not None else len(self.plain)
        self.open_at = None
        raw = self.plain[start:]
        text = raw.strip()
        if not text:
            self.issues.append(f"empty phrase at character {start} dropped")
            return None
        begin = start + len(raw) - len(raw.lstrip())
        phrase = AnswerPhrase(text, begin, begin + len(text), None)
        self.phrases.append(phrase)
        self.pending, self.pending_mark = phrase, len(self.plain)
        return phrase

    def seg(self) -> None:
        index = self.num_seg
        self.num_seg += 1
        target = None
        if self.open_at is not None:
            self.issues.append(f"[SEG] {index} inside an open phrase: the phrase was closed there")
            target = self.close()
        elif self.pending is not None and self.pending_mark == len(self.plain):
            target = self.pending
        else:
            self.issues.append(f"[SEG] {index} follows no phrase: grounded as an empty phrase")
        if target is None:
            target = AnswerPhrase("", len(self.plain), len(self.plain), None)
            self.phrases.append(target)
        target.seg_index = index
        self.pending = None


def parse_answer(ids: Sequence[int], tokenizer: PreTrainedTokenizerBase) -> ParsedAnswer:
    """Read answer token ids (generated or teacher-forced) into text and phrases; never raises on bad markup."""
    start_id, end_id, seg_id = tokenizer.convert_tokens_to_ids([PHRASE_START, PHRASE_END, SEG_TOKEN])
    skip = {tokenizer.convert_tokens_to_ids(t) for t in (IMAGE_TOKEN, *EXTRA_SPECIAL_TOKENS)}
    skip |= set(tokenizer.all_special_ids)
    skip -= {start_id, end_id, seg_id}
    reader = _AnswerReader()
    run: list[int] = []

    def flush() -> None:
        if run:
            reader.add_text(tokenizer.decode(run))
            run.clear()

    for raw in ids:
        token = int(raw)
        if token == tokenizer.eos_token_id:
            break
        if token not in (start_id, end_id, seg_id):
            if token in skip:
                reader.issues.append(f"special token {tokenizer.convert_ids_to_tokens(token)!r} skipped")
            else:
                run.append(token)
            continue
        flush()
        if token == start_id:
            if reader.open_at is not None:
                reader.issues.append(f"{PHRASE_START} inside an open phrase: the open phrase was closed there")
                reader.close()
            reader.open_at = len(reader.plain)
        elif token == end_id:
            if reader.open_at is None:
                reader.issues.append(f"{PHRASE_END} without {PHRASE_START} dropped")
            else:
                reader.close()
        else:
            reader.seg()
    flush()
    if reader.open_at is not None:
        reader.issues.append("phrase still open at the end of the answer: kept without a mask")
        reader.close()
    for p in reader.phrases:
        if p.seg_index is None:
            reader.issues.append(f"phrase {p.text!r} has no [SEG]: no mask")
    return ParsedAnswer(reader.plain, reader.phrases, reader.num_seg, reader.issues)
