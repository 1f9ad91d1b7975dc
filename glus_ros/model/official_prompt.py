"""The prompts of the official GLUS inference (llava_v1 conversation), as token ids.

Facts of github GLUS-video/GLUS (commit 8fd138b, ``inference_iter.py``, ``utils/utils.py``, LLaVA's
``conversation.py`` / ``mm_utils.py``), re-expressed here:

- llava_v1: the system prompt, then ``USER: <question> ASSISTANT: <answer></s>`` per turn (a space after
  the question, ``</s>`` after the answer); the prompt ends after the last answer's text, without ``</s>``.
- The first turn shows the context frames and the first query frame: ``<image>``x4, newline, "Please finished
  the following tasks on the context frames above.", newline, then the question; every later turn shows
  one query frame: ``<image>``, newline, "Can you segment the {expr} in this frame?". Each ``<image>`` is
  wrapped as ``<im_start><image><im_end>``. Earlier answers read "Sure, the segmentation result is [SEG].";
  the open answer is the prefix "Sure, the segmentation result is ". At most ``num_query`` turns: when a
  new one would exceed that, the oldest goes and the new first turn holds the context frames.
- The expression: one trailing "." removed, then lower-cased; nothing else is changed.
- The prompt is cut at ``<image>`` and every piece tokenised on its own (BOS then dropped but for the
  first); each image is the out-of-vocabulary placeholder -200 between the pieces.

Since all query turns of a window are alike, the ids depend only on the expression and the number of turns.
"""

from __future__ import annotations

from glus_ros.model.prompting import clean_expression
from glus_ros.model.tokenizer import IMAGE_TOKEN, SEG_TOKEN

IMAGE_PLACEHOLDER = -200   # LLaVA's IMAGE_TOKEN_INDEX: where a frame's visual tokens go (no vocabulary row)
IM_START, IM_END, IM_PATCH = "<im_start>", "<im_end>", "<im_patch>"
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
ROLES = ("USER", "ASSISTANT")
CONTEXT_INFO = "Please finished the following tasks on the context frames above."
QUESTION = "Can you segment the {expression} in this frame?"
ANSWER_PREFIX = "Sure, the segmentation result is "
NUM_CONTEXT = 4   # CONTEXT_INFO_LIST of the official code holds four images, whatever else is configured


def official_expression(expression: str) -> str:
    """The referring expression as the official code puts it in the prompt (after validating it)."""
    clean_expression(expression)  # empty, over-long or reserved-token expressions are refused
    for token in (IM_START, IM_END, IM_PATCH, "</s>", "<s>"):
        if token in expression:
            raise ValueError(f"expression contains the reserved token {token!r}")
    text = expression[:-1] if expression.endswith(".") else expression
    return text.lower()


def _image() -> str:
    return IM_START + IMAGE_TOKEN + IM_END


def conversation_text(expression: str, turns: int) -> str:
    """The llava_v1 prompt text for a window of ``turns`` query frames (``expression`` already normalised)."""
    if turns < 1:
        raise ValueError(f"a prompt needs at least one query turn, got {turns}")
    question = _image() + "\n" + QUESTION.format(expression=expression)
    first = _image() * NUM_CONTEXT + "\n" + CONTEXT_INFO + "\n" + question
    answered = ANSWER_PREFIX + SEG_TOKEN + "."
    text = SYSTEM + " "
    for turn in range(turns):
        text += f"{ROLES[0]}: {first if turn == 0 else question} "
        text += f"{ROLES[1]}: {answered if turn < turns - 1 else ANSWER_PREFIX}"
        if turn < turns - 1:
            text += "</s>"
    return text


class OfficialConversation:
    """Token ids of the official prompts for one expression (cached per number of turns)."""

    def __init__(self, tokenizer, expression: str) -> None:
        for token in (IM_START, IM_END, SEG_TOKEN):
            if token not in getattr(tokenizer, "added_tokens", {}):
                raise ValueError(f"the tokenizer has no added token {token!r}: not a GLUS release tokenizer "
                                 "(added_tokens.json)")
        self.tokenizer = tokenizer
        self.expression = official_expression(expression)
        self.seg_id = int(tokenizer.added_tokens[SEG_TOKEN])
        self._cache: dict[int, list[int]] = {}

    def ids(self, turns: int) -> list[int]:
        """Input ids with one IMAGE_PLACEHOLDER per frame: the 4 context frames, then ``turns`` query frames."""
        if turns not in self._cache:
            self._cache[turns] = tokenize_around_images(conversation_text(self.expression, turns), self.tokenizer)
        return self._cache[turns]


def tokenize_around_images(prompt: str, tokenizer) -> list[int]:
    """Each piece between ``<image>`` tokenised on its own, BOS kept only at the start (LLaVA mm_utils)."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_TOKEN)]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = chunks[0][:offset]
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_PLACEHOLDER)
        ids.extend(chunk[offset:])
    return ids

