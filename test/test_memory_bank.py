"""The bounded memory bank: which past steps are read, and that memory stays constant on long streams."""

import torch

from glus_ros.model.memory_bank import MemoryBank, selected_steps
from glus_ros.model.transforms import sam_input, to_tensor

from helpers_model import moving_disk_clip, tiny_model


def test_selected_steps_previous_plus_strided():
    # step 10, stride 3: slot 1 -> 9; slot k>=2 -> ((10-2)//3)*3 - (k-2)*3 = 6, 3, 0, then negatives dropped
    assert selected_steps(10, slots=7, stride=3) == [(1, 9), (2, 6), (3, 3), (4, 0)]
    # stride 1 (training): the 7 previous steps
    assert selected_steps(10, slots=7, stride=1) == [(t, 10 - t) for t in range(1, 8)]
    assert selected_steps(0, slots=7, stride=3) == []


def test_bank_keeps_only_what_can_be_read():
    bank = MemoryBank(slots=7, stride=3)
    x = torch.zeros(1, 2, 2, 2)
    for step in range(200):
        # whatever the bank reads must be what selected_steps asks for
        wanted = [s for _, s in selected_steps(step, 7, 3)]
        assert [e.step for _, e in bank.read()] == wanted
        bank.add(x, x)
        assert len(bank) <= bank.capacity == 19


def test_seed_from_key_frame():
    bank = MemoryBank(slots=3, stride=1)
    feats = [torch.full((1, 1, 1, 1), float(i)) for i in range(3)]
    for f in feats:
        bank.add(f, f)
    seeded = bank.seed_from(1)
    assert len(seeded) == 1 and seeded.next_step == 1
    assert float(seeded.read()[0][1].features) == 1.0


@torch.inference_mode()
def test_memory_constant_over_long_stream_with_real_sam2():
    """300 frames through the real SAM 2 head: the bank's size stops growing at its capacity."""
    model = tiny_model()
    frames = moving_disk_clip(num_frames=6)
    feats = model.encode_sam_frames(sam_input(to_tensor(frames), model.sam.image_size))
    bank = model.new_memory_bank()
    prompt = torch.randn(1, model.sam.prompt_dim)
    sizes = []
    for step in range(300):
        model.track_step(feats.select(slice(step % 6, step % 6 + 1)), prompt, bank)
        sizes.append(bank.nbytes())
    assert len(bank) == bank.capacity
    assert sizes[-1] == sizes[bank.capacity - 1] == max(sizes)
    assert sizes[100] == sizes[299]
