"""The released GLUS weights stream: the streaming engine and the tracker node run the official step.

Fixture ``c`` (every tensor trained-like, test/fixtures/glus_official) stands in for GLUS-S. In the synchronous
schedule (``full``: the MLLM on every frame, inline, no drops) each frame's re-grounding must be the official step
for that frame: the newest query frames as consecutive turns, the context frames chosen from the history so far by
the official rule, one generated token, [SEG] -> the prompt decoded by SAM 2 with the target's memory. The
reference is the same step composed from the offline loop's parts (which test_official_parity.py checks against
the official code), frame by frame with the same context frames.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from glus_ros.core.frames import FrameEncoder
from glus_ros.core.grounders import ConversationGrounder
from glus_ros.core.tracking import frame_mask, track_frame
from glus_ros.inference import load_model
from glus_ros.model.config import read_yaml_mapping
from glus_ros.sampling import official_context_frames
from glus_ros.streaming.engine import EngineConfig, StreamingEngine
from glus_ros.streaming.types import StreamFrame, TargetSpec
from glus_ros.video_io import read_video

from helpers_ros import RosTestEnv, rclpy_context, ros_session, spin_until

FIXTURE = Path(__file__).parent / "fixtures" / "glus_official" / "c"
ATOL = 1e-4


@pytest.fixture(scope="module")
def release():
    model = load_model("glus-s", FIXTURE / "checkpoint", vision_tower=FIXTURE / "clip",
                       overrides=read_yaml_mapping(FIXTURE / "glus_override.yaml"))
    frames, _, _ = read_video(FIXTURE / "frames")
    expression = json.loads((FIXTURE / "expected_start0.json").read_text())["expression"]
    return model, frames, expression


def official_steps(model, frames, expression):
    """(token, prompt, mask) per frame: the official step with the history so far as the video."""
    encoder = FrameEncoder(model, frames, one_by_one=True)
    grounder = ConversationGrounder(model, encoder, expression)
    bank = model.new_memory_bank()
    height, width = frames[0].shape[:2]
    steps = []
    with torch.inference_mode():
        for t in range(len(frames)):
            context = official_context_frames(t + 1, model.cfg.sampling.num_context)
            window = list(range(max(0, t - model.cfg.sampling.num_query + 1), t + 1))
            answer = grounder.ground(context, window, [t])
            prompt = answer.frames[t].prompt
            if prompt is None:
                bank.skip()
                mask = np.zeros((height, width), bool)
            else:
                mask, _ = frame_mask(track_frame(model, encoder.sam_features(t), prompt, bank), height, width,
                                     model.cfg.loop)
            steps.append((answer.token, prompt, mask))
    return steps


def replay(model, frames, expression, **config):
    """Run the engine inline over the frames; per frame (token, prompt, mask) as the engine computed them."""
    engine = StreamingEngine(model, EngineConfig(schedule="full", **config))
    engine.add_target(TargetSpec("t", expression))
    grounder = engine._conversations[expression]  # the engine's own official step for this expression
    answers = []
    real_step = grounder.step
    grounder.step = lambda *a, **k: answers.append(real_step(*a, **k)) or answers[-1]  # records, still runs it
    out = []
    for t, frame in enumerate(frames):
        result = engine.process(StreamFrame(frame, t / 10.0))
        (target,) = result.targets
        answer = answers[-1]
        out.append((answer.token, answer.frames[-1].prompt, target.mask))
    return out, engine


def test_synchronous_replay_is_the_official_step_frame_by_frame(release):
    model, frames, expression = release
    expected = official_steps(model, frames, expression)
    ours, engine = replay(model, frames, expression, prefix_cache=False)
    assert len(ours) == len(expected) == len(frames)
    seg = engine._conversations[expression].seg_id
    for t, ((token, prompt, mask), (want_token, want_prompt, want_mask)) in enumerate(
            zip(ours, expected, strict=True)):
        assert token == want_token, f"frame {t}: generated token"
        if want_token == seg:
            assert float((prompt - want_prompt).abs().max()) <= ATOL, f"frame {t}: prompt"
        else:
            assert prompt is None
        assert np.array_equal(mask, want_mask), f"frame {t}: mask"
    assert sum(tok == seg for tok, _, _ in expected) >= 3
    assert 0.05 < np.mean([m.mean() for _, _, m in expected]) < 0.95  # masks with both classes


def test_cached_and_uncached_regroundings_give_the_same_prompts(release):
    model, frames, expression = release
    cached, engine = replay(model, frames, expression, prefix_cache=True, context_refresh=8)
    uncached, _ = replay(model, frames, expression, prefix_cache=False, context_refresh=8)
    assert engine._prefix_cache.hits > 0, "kept context frames must reuse the conversation's prefix"
    for t, ((tok_a, prompt_a, mask_a), (tok_b, prompt_b, mask_b)) in enumerate(zip(cached, uncached, strict=True)):
        assert tok_a == tok_b, f"frame {t}"
        if prompt_a is not None:
            assert float((prompt_a - prompt_b).abs().max()) <= ATOL, f"frame {t}: prompt"
        assert np.array_equal(mask_a, mask_b), f"frame {t}: mask"


def test_the_release_refuses_what_its_conversation_cannot_ask(release):
    from glus_ros.model.region import Region

    model, _frames, _expression = release
    engine = StreamingEngine(model, EngineConfig(schedule="full"))
    with pytest.raises(ValueError, match="referring expressions only"):
        engine.add_target(TargetSpec("q", "what is moving?"))
    with pytest.raises(ValueError, match="referring expressions only"):
        engine.add_target(TargetSpec("r", "", region=Region(1.0, 1.0, 20.0, 20.0)))
    with pytest.raises(ValueError, match="empty"):
        engine.add_target(TargetSpec("e", "   "))


def test_live_schedule_grounds_and_tracks_the_release(release):
    model, frames, expression = release
    engine = StreamingEngine(model, EngineConfig(schedule="live", reground_every=1))
    engine.add_target(TargetSpec("t", expression))
    outputs = []
    try:
        for t, frame in enumerate(frames):
            outputs.append(engine.process(StreamFrame(frame, t / 10.0)).targets[0])
            assert engine.wait_grounded(60.0)  # no drops: every re-grounding lands on the next frame
    finally:
        engine.stop()
    assert outputs[0].state == "grounding" and not outputs[0].mask.any()  # waiting for its first grounding
    assert any(o.mask.any() for o in outputs[1:]) and engine.grounding_stats["groundings"] >= len(frames) - 1


# --- across processes: glus-ros track with the release + a plain rclpy client ----------------------------------
@pytest.fixture(scope="session")
def ros_test_env(tmp_path_factory: pytest.TempPathFactory) -> RosTestEnv:
    return ros_session(tmp_path_factory)


def test_track_command_streams_the_release_to_a_client(ros_test_env: RosTestEnv, tmp_path: Path) -> None:
    """``glus-ros track --model glus-s --checkpoint DIR --vision-tower DIR`` (the fixture's tiny sizes through
    ``--model-override``, as ``segment`` takes them) answers a command from another process with masks."""
    import rclpy
    from glus_ros_msgs.msg import TargetResultArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from glus_ros.ros.qos import qos_profile

    expression = json.loads((FIXTURE / "expected_start0.json").read_text())["expression"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "glus_ros.cli", "track", "--model", "glus-s", "--checkpoint",
         str(FIXTURE / "checkpoint"), "--vision-tower", str(FIXTURE / "clip"), "--model-override",
         str(FIXTURE / "glus_override.yaml"), "--camera", str(FIXTURE / "frames"),
         "-p", "schedule:=live", "-p", "image_topic:=/glus_release/image"],
        cwd=tmp_path, env=ros_test_env.child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with rclpy_context() as context:
            node = rclpy.create_node("glus_release_client", context=context)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            results: list = []
            node.create_subscription(TargetResultArray, "/glus/segmentation", results.append,
                                     qos_profile("reliable", 50))
            command = node.create_publisher(String, "/glus/command", qos_profile("reliable", 10))
            alive = lambda: proc.poll() is None  # noqa: E731
            assert spin_until(executor, lambda: command.get_subscription_count() > 0 or not alive(), 120.0)
            assert alive(), proc.communicate(timeout=10)[1][-3000:]
            command.publish(String(data=expression))

            def answered() -> bool:
                return any(r.expression == expression and any(r.mask.data) for m in results for r in m.results)

            ok = spin_until(executor, lambda: answered() or not alive(), 120.0)
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        assert ok, f"{len(results)} results, none with a mask; alive {alive()}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def test_the_glus_backend_grounds_the_release_with_the_official_step(release):
    """``GLUSBackend.ground`` (what backend-agnostic callers use) runs the official step for the release: the
    newest frame's prompt equals the one-step grounder's, with CLIPImageProcessor's crop."""
    from glus_ros.backends.glus import GLUSBackend

    model, frames, expression = release
    context, window = official_context_frames(6, 4), [2, 3, 4, 5]
    with torch.inference_mode():
        want = ConversationGrounder(model, FrameEncoder(model, frames, one_by_one=True), expression).ground(
            context, window, [5])
    (got,) = GLUSBackend(model).ground([frames[i] for i in window], [expression], [frames[i] for i in context])
    if want.frames[5].prompt is None:
        assert got.frames == {}
    else:
        assert list(got.frames) == [3]
        assert float((got.frames[3].prompt - want.frames[5].prompt[0]).abs().max()) <= ATOL
