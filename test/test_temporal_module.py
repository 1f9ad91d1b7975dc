"""The VideoMolmo temporal module: causal across frames, identity at init, an option of the model config."""

import pytest
import torch

from glus_ros.inference import load_model
from glus_ros.model.config import load_config
from glus_ros.model.temporal import TemporalModule
from glus_ros.model.transforms import clip_input, to_tensor

from helpers_model import moving_disk_clip


def _trained_module(hidden=16, heads=2, window=None) -> TemporalModule:
    torch.manual_seed(0)
    module = TemporalModule(hidden, heads, window)
    torch.nn.init.normal_(module.out.weight, std=0.5)   # as if trained: the update is no longer zero
    return module


def test_identity_at_init():
    torch.manual_seed(0)
    frames = torch.randn(2, 5, 3, 16)
    assert torch.equal(TemporalModule(16, 4)(frames), frames)


def test_a_frame_sees_only_the_frames_before_it():
    module = _trained_module()
    frames = torch.randn(1, 5, 3, 16)
    out = module(frames)
    assert torch.equal(out[:, 0], frames[:, 0])          # the first frame has nothing to attend to
    assert not torch.allclose(out[:, 1:], frames[:, 1:])  # the others are conditioned on earlier frames
    later_changed = frames.clone()
    later_changed[:, 3:] += torch.randn(1, 2, 3, 16)
    changed = module(later_changed)
    assert torch.allclose(changed[:, :3], out[:, :3], atol=1e-6)   # the future never leaks back
    assert not torch.allclose(changed[:, 3:], out[:, 3:])
    earlier_changed = frames.clone()
    earlier_changed[:, 0] += torch.randn(3, 16)  # (a constant shift would vanish in the layer norm)
    assert not torch.allclose(module(earlier_changed)[:, 4], out[:, 4])


def test_window_limits_how_far_back_a_frame_looks():
    module = _trained_module(window=1)
    frames = torch.randn(1, 4, 3, 16)
    out = module(frames)
    older = frames.clone()
    older[:, 0] += torch.randn(3, 16)
    assert torch.allclose(module(older)[:, 2:], out[:, 2:], atol=1e-6)   # frames 2, 3 see only their predecessor
    assert not torch.allclose(module(older)[:, 1], out[:, 1])


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        TemporalModule(10, 3)
    with pytest.raises(ValueError, match="window"):
        TemporalModule(16, 2, window=0)
    with pytest.raises(ValueError, match="frames, tokens, hidden"):
        TemporalModule(16, 2)(torch.zeros(3, 16))


def _prompts(model, frames):
    pixels = clip_input(to_tensor(frames), model.cfg.vlm.image_size)
    embeds = model.encode_clip_frames(pixels)
    return model.seg_prompts(embeds[None, :4], embeds[None, 4:], ["the red circle"])


def test_config_option_adds_the_module_without_changing_the_model_at_init():
    plain = load_model("tiny").eval()
    temporal = load_model("tiny", overrides={"vlm": {"temporal_module": True}}).eval()
    assert plain.vlm.temporal is None and temporal.vlm.temporal is not None
    assert temporal.cfg.to_dict()["vlm"]["temporal_module"] is True
    assert load_config("tiny").vlm.temporal_module is False
    # every other weight is initialised as without the module, and the module starts as the identity
    plain_state = plain.state_dict()
    for name, value in temporal.state_dict().items():
        if not name.startswith("vlm.temporal."):
            assert torch.equal(value, plain_state[name]), name
    frames = moving_disk_clip(8)
    with torch.no_grad():
        assert torch.allclose(_prompts(plain, frames).prompts, _prompts(temporal, frames).prompts, atol=1e-6)
    groups = temporal.parameter_groups()
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(temporal.parameters()))
    assert {id(p) for p in groups["temporal"]} == {id(p) for p in temporal.vlm.temporal.parameters()}


def test_temporal_module_trains_through_the_seg_prompts():
    model = load_model("tiny", overrides={"vlm": {"temporal_module": True}}).train()
    model.apply_trainable(["temporal"])
    _prompts(model, moving_disk_clip(8)).prompts.pow(2).mean().backward()
    assert model.vlm.temporal.out.weight.grad is not None
    assert float(model.vlm.temporal.out.weight.grad.abs().sum()) > 0
