"""Prompt order (context, query, expression, answer) and one [SEG] per query frame."""

import pytest
import torch

from glus_ros.model.config import load_config
from glus_ros.model.prompting import IGNORE_INDEX, PromptBuilder, clean_expression
from glus_ros.model.tokenizer import build_builtin_tokenizer


@pytest.fixture(scope="module")
def builder():
    return PromptBuilder(build_builtin_tokenizer(), load_config("tiny").vlm)


def test_context_then_query_then_expression_then_answer(builder):
    cfg = builder.cfg
    enc = builder.encode("the red circle", num_context=4, num_query=4)
    ids = enc.input_ids.tolist()
    image_pos = [i for i, t in enumerate(ids) if t == builder.image_id]
    assert len(image_pos) == 8 * cfg.tokens_per_frame
    expr_ids = builder.tokenizer(" the red circle", add_special_tokens=False).input_ids
    expr_start = next(i for i in range(len(ids)) if ids[i:i + len(expr_ids)] == expr_ids)
    seg_pos = [i for i, t in enumerate(ids) if t == builder.seg_id]
    assert max(image_pos) < expr_start < min(seg_pos)
    # context block, a "query" marker, then the query block: the frames are in causal order
    ctx_end = image_pos[4 * cfg.tokens_per_frame - 1]
    query_start = image_pos[4 * cfg.tokens_per_frame]
    between = builder.tokenizer.decode(ids[ctx_end + 1:query_start])
    assert "query" in between


@pytest.mark.parametrize("num_query", [1, 4, 6])
def test_one_seg_per_query_frame_and_labels_on_answer_only(builder, num_query):
    enc = builder.encode("the blue square", num_context=4, num_query=num_query)
    assert int((enc.input_ids == builder.seg_id).sum()) == num_query
    supervised = enc.labels != IGNORE_INDEX
    # every [SEG] is supervised, no image token is
    assert bool(supervised[enc.input_ids == builder.seg_id].all())
    assert not bool(supervised[enc.input_ids == builder.image_id].any())
    assert int(enc.labels[-1]) == builder.tokenizer.eos_token_id


def test_batch_pads_right(builder):
    a = builder.encode("the red circle", 2, 2)
    b = builder.encode("the small green triangle that moves left then stops", 2, 2)
    ids, mask, labels = builder.batch([a, b])
    assert ids.shape[0] == 2 and mask[0].sum() == len(a.input_ids) and mask[1].sum() == len(b.input_ids)
    assert bool((labels[0, len(a.input_ids):] == IGNORE_INDEX).all())
    assert torch.equal(ids[1, : len(b.input_ids)], b.input_ids)


@pytest.mark.parametrize("bad, match", [
    ("", "empty expression"),
    ("   \n ", "empty expression"),
    ("x" * 401, "too long"),
    ("the [SEG] mug", "reserved token"),
    ("look <image> here", "reserved token"),
])
def test_bad_expressions_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        clean_expression(bad)


def test_expression_whitespace_normalised():
    assert clean_expression("  the   red\tmug ") == "the red mug"
