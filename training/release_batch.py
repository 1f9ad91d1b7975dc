"""Teacher-forced training batches for the released GLUS weights, built as the official training code builds them.

Facts of github GLUS-video/GLUS (commit 8fd138b: ``dataset/refer_video_seg_dataset.py``, ``dataset/dataset.py``
``collate_fn``, ``utils/utils.py``), re-expressed here:

- A sample is one video: up to 3 of its expressions (each its own conversation), 4 context frames (one drawn at
  random inside each of 4 equal segments, ``linspace(0, N, 5)`` as ints) and 4 consecutive query frames from a
  random start.
- The conversation (llava_v1) has one turn per query frame. The first question is the context block (``<image>`` x 4,
  newline, "Please finished the following tasks on the context frames above.", newline) followed by a question
  template; every answer is a random answer template ending in ``[SEG]``; turns end with ``</s>``. The expression
  has one trailing "." removed and is lower-cased in the question.
- ``<image>`` is wrapped as ``<im_start><image><im_end>`` and each image becomes the placeholder -200 (the prompt is
  tokenised around it, as at inference).
- Right padding with the pad id (LLaMA's unk); the attention mask is "not the pad id". In the LLM the mask of a
  conversation is that mask with one attended position per visual token added in front (LLaVA's
  ``prepare_inputs_labels_for_multimodal``), which is the plain mask whenever no unk token is inside the text.
- Labels: LLaVA's round rule. The prompt is split at ``</s>``; each round's length is the length of the round
  tokenised alone (BOS counted, standing for the ``</s>`` of the full sequence), and its first
  ``len(tokenised "... ASSISTANT: ") - 2`` tokens are masked; BOS and everything after the last round are masked. With
  a vocabulary that tokenises "USER" after "</s>" differently from a round on its own this rule drifts (the official
  code then stops on an assert); the labels are those of the rule either way, and :func:`conversation_labels` says
  whether it drifted.
- The ground truth of an expression on a frame is the sum of its objects' masks (as uint8; 2 where two objects
  overlap), at the frame's size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from glus_ros.model.official_prompt import IM_END, IM_START, IMAGE_PLACEHOLDER, ROLES, SYSTEM, tokenize_around_images
from glus_ros.model.prompting import IGNORE_INDEX
from glus_ros.model.tokenizer import IMAGE_TOKEN

log = logging.getLogger(__name__)

NUM_CONTEXT = 4            # CONTEXT_FRAME_NUM of the official utils: the context block always shows 4 images
CONTEXT_INFO = IMAGE_TOKEN * NUM_CONTEXT + "\nPlease finished the following tasks on the context frames above.\n"
QUESTION_TEMPLATES = (
    IMAGE_TOKEN + "\nCan you segment the {class_name} in this frame?",
    IMAGE_TOKEN + "\nPlease segment the {class_name} in this frame.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this frame? Please respond with segmentation mask.",
    IMAGE_TOKEN + "\nWhat is {class_name} in this frame? Please output segmentation mask.",
)
ANSWER_TEMPLATES = ("It is [SEG].", "Sure, [SEG].", "Sure, it is [SEG].", "Sure, the segmentation result is [SEG].",
                    "[SEG].")
TURN_END = "</s>"
ANSWER_SEP = " " + ROLES[1] + ": "   # what the round rule splits a round at
MAX_EXPRESSIONS = 3                  # --num_classes_per_sample
_warned_drift = False                # the label-rule warning is said once per process


def sample_expression_text(expression: str) -> str:
    """The expression as a training sample holds it: one trailing "." removed, surrounding spaces stripped."""
    text = expression[:-1] if expression.endswith(".") else expression
    return text.strip()


def training_conversation(expression: str, questions: list[int], answers: list[int]) -> str:
    """The llava_v1 prompt of one expression: one answered turn per query frame (template indices given)."""
    if len(questions) != len(answers) or not questions:
        raise ValueError(f"one question and one answer per query frame, got {len(questions)} and {len(answers)}")
    name = sample_expression_text(expression).lower()
    text = SYSTEM + " "
    for turn, (q, a) in enumerate(zip(questions, answers, strict=True)):
        question = QUESTION_TEMPLATES[q].format(class_name=name)
        if turn == 0:
            question = CONTEXT_INFO + question
        text += f"{ROLES[0]}: {question} {ROLES[1]}: {ANSWER_TEMPLATES[a]}{TURN_END}"
    return text.replace(IMAGE_TOKEN, IM_START + IMAGE_TOKEN + IM_END)


def conversation_labels(text: str, ids: list[int], tokenizer: Any, length: int | None = None,
                        ) -> tuple[list[int], bool]:
    """LLaVA's round rule on ``ids`` (the tokenised ``text``, maybe right-padded; ``length`` tokens without the
    padding): (labels, whether the rule's length matched ``length``)."""
    labels = list(ids)
    cur = 1
    labels[:cur] = [IGNORE_INDEX] * cur
    for piece in text.split(TURN_END):
        if piece == "":
            break
        parts = piece.split(ANSWER_SEP)
        if len(parts) != 2:
            raise ValueError(f"a conversation round must hold one answer, got {len(parts) - 1} in {piece!r}")
        round_len = len(tokenize_around_images(piece, tokenizer))
        instruction_len = len(tokenize_around_images(parts[0] + ANSWER_SEP, tokenizer)) - 2
        end = min(cur + instruction_len, len(labels))
        labels[cur:end] = [IGNORE_INDEX] * max(0, end - cur)
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * max(0, len(labels) - cur)
    return labels, cur == (len(ids) if length is None else length)


@dataclass
class ReleaseSample:
    """One training sample: a video's context + query frames and up to 3 of its expressions.

    ``str_ids`` ("<dataset>_<video>_<exp_id>") key the contrastive bank; ``frame_names`` are the query frames'
    names (the bank's frame key); ``masks`` (E, Q, H, W) float at the frame size.
    """

    video: str
    str_ids: list[str]
    expressions: list[str]
    context_frames: list[int]
    query_frames: list[int]
    frame_names: list[str]
    questions: list[list[int]]
    answers: list[list[int]]
    frames: np.ndarray                 # (Nc + Nq, H, W, 3) uint8, context frames first
    masks: torch.Tensor
    dataset: str = "mevis"


@dataclass
class ReleaseBatch:
    """Collated :class:`ReleaseSample` s: one row of ``input_ids`` / ``labels`` per conversation (right-padded),
    ``offsets[s]:offsets[s+1]`` the conversations of sample ``s``."""

    samples: list[ReleaseSample]
    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor
    offsets: list[int]
    drifted: list[int] = field(default_factory=list)  # conversations whose round rule did not match their length


def collate_release(samples: list[ReleaseSample], tokenizer: Any) -> ReleaseBatch:
    """Token ids and labels of every conversation of ``samples``, padded with the tokenizer's pad id (the label
    rule runs on the padded row, as officially: a rule that drifted past the text leaves pad ids as labels)."""
    texts, rows, offsets = [], [], [0]
    for sample in samples:
        for e, expression in enumerate(sample.expressions):
            texts.append(training_conversation(expression, sample.questions[e], sample.answers[e]))
            rows.append(tokenize_around_images(texts[-1], tokenizer))
        offsets.append(len(rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), int(pad), dtype=torch.long)
    target = torch.empty_like(input_ids)
    drifted = []
    for i, (text, r) in enumerate(zip(texts, rows, strict=True)):
        input_ids[i, :len(r)] = torch.tensor(r)
        labels, matched = conversation_labels(text, input_ids[i].tolist(), tokenizer, len(r))
        target[i] = torch.tensor(labels)
        if not matched:
            drifted.append(i)
    global _warned_drift
    if drifted and not _warned_drift:
        _warned_drift = True
        log.warning("%d of %d conversations: the tokenizer splits rounds differently inside the conversation than "
                    "alone, so LLaVA's label rule is off by some tokens there (the official code stops on this; "
                    "said once)",
                    len(drifted), len(rows))
    # the official mask: every token that is not the pad id (LLaMA's unk, which its byte-fallback vocabulary never
    # produces inside a text; a vocabulary that does gets those tokens masked too, as officially)
    attention = input_ids.ne(int(pad)).long()
    return ReleaseBatch(samples, input_ids, target, attention, offsets, drifted)


def image_slots(ids: torch.Tensor) -> int:
    return int((ids == IMAGE_PLACEHOLDER).sum())


def official_context_draw(length: int, num_context: int, rng: np.random.Generator) -> list[int]:
    """One frame drawn uniformly inside each of ``num_context`` segments (``linspace(0, N, k + 1)`` as ints)."""
    edges = np.linspace(0, length, num_context + 1, dtype=int)
    return [int(rng.integers(edges[i], edges[i + 1])) for i in range(num_context)]


def expression_masks(reader: Any, expression: Any, frames: list[int]) -> torch.Tensor:
    """(Q, H, W) float ground truth of ``expression`` on ``frames``: its objects' masks summed, as the official
    dataset builds them (readers without per-object masks give their union)."""
    if getattr(expression, "anno_ids", None) and hasattr(reader, "object_masks"):
        per_object = reader.object_masks(expression)[:, frames]
        return torch.from_numpy(per_object.astype(np.uint8).sum(axis=0, dtype=np.uint8)).float()
    return torch.from_numpy(reader.gt_masks(expression)[frames]).float()


def build_release_sample(reader: Any, video: str, exp_ids: list[str], context_frames: list[int],
                         query_frames: list[int], questions: list[list[int]], answers: list[list[int]],
                         dataset: str = "mevis") -> ReleaseSample:
    """A :class:`ReleaseSample` of ``video`` with the given draws (the frames read, the masks built)."""
    by_id = {e.exp_id: e for e in reader.expressions() if e.video == video}
    missing = [e for e in exp_ids if e not in by_id]
    if missing:
        raise ValueError(f"video {video!r} has no expression(s) {missing}")
    names = reader.frames(video)
    frames = np.stack([reader.load_frame(video, names[i]) for i in [*context_frames, *query_frames]])
    expressions = [by_id[e] for e in exp_ids]
    masks = torch.stack([expression_masks(reader, e, query_frames) for e in expressions])
    return ReleaseSample(video, [f"{dataset}_{video}_{e}" for e in exp_ids], [e.text for e in expressions],
                         list(context_frames), list(query_frames), [names[i] for i in query_frames],
                         questions, answers, frames, masks, dataset)


def draw_release_sample(reader: Any, video: str, rng: np.random.Generator, num_context: int = NUM_CONTEXT,
                        num_query: int = 4, max_expressions: int = MAX_EXPRESSIONS,
                        dataset: str = "mevis") -> ReleaseSample:
    """The official draw for one video: up to ``max_expressions`` of its expressions (without replacement), the
    context frames (:func:`official_context_draw`), ``num_query`` consecutive query frames from a random start,
    and a random question and answer template per turn."""
    length = len(reader.frames(video))
    if length < max(num_context, num_query):
        raise ValueError(f"video {video!r} has {length} frames, a training sample needs at least "
                         f"{max(num_context, num_query)}")
    exp_ids = [e.exp_id for e in reader.expressions() if e.video == video]
    if not exp_ids:
        raise ValueError(f"video {video!r} has no expression")
    if len(exp_ids) > max_expressions:
        exp_ids = [exp_ids[i] for i in rng.choice(len(exp_ids), size=max_expressions, replace=False)]
    start = int(rng.integers(0, length - num_query + 1))
    query = list(range(start, start + num_query))
    context = official_context_draw(length, num_context, rng)
    questions = [[int(q) for q in rng.integers(0, len(QUESTION_TEMPLATES), num_query)] for _ in exp_ids]
    answers = [[int(a) for a in rng.integers(0, len(ANSWER_TEMPLATES), num_query)] for _ in exp_ids]
    return build_release_sample(reader, video, exp_ids, context, query, questions, answers, dataset)
