"""A bounded GLUS/SAM 2 memory bank for one tracked object (or one batch of training clips).

GLUS reads up to ``slots`` past frames through SAM 2 memory attention: the previous frame plus older
frames on a temporal stride, without object pointers. The public reference code keeps every frame;
a robot streams forever, so this bank evicts what no future read can select and its size is bounded
by ``(slots - 1) * stride + 1`` entries however long the stream runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class MemoryEntry:
    step: int                  # processing step that wrote it (monotonic, also for backward passes)
    features: torch.Tensor     # (B, mem_dim, H, W) from the memory encoder
    pos_enc: torch.Tensor      # (B, mem_dim, H, W)


def selected_steps(step: int, slots: int, stride: int) -> list[tuple[int, int]]:
    """``(t_rel, memory step)`` pairs read when decoding ``step``, nearest first.

    Slot 1 is the previous step; slot k >= 2 is ``((step - 2) // stride) * stride - (k - 2) * stride``,
    the SAM 2 rule for a temporal stride. Steps below 0 are dropped.
    """
    picks: list[tuple[int, int]] = []
    for t_rel in range(1, slots + 1):
        if t_rel == 1:
            prev = step - 1
        else:
            prev = ((step - 2) // stride) * stride - (t_rel - 2) * stride
        if prev >= 0:
            picks.append((t_rel, prev))
    return picks


class MemoryBank:
    """Memory features of past steps; keeps only what a future read can still select."""

    def __init__(self, slots: int = 7, stride: int = 3) -> None:
        if slots < 1 or stride < 1:
            raise ValueError(f"memory slots and stride must be >= 1, got {slots}, {stride}")
        self.slots = slots
        self.stride = stride
        self._entries: OrderedDict[int, MemoryEntry] = OrderedDict()
        self.next_step = 0

    @property
    def capacity(self) -> int:
        return (self.slots - 1) * self.stride + 1

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.next_step = 0

    def add(self, features: torch.Tensor, pos_enc: torch.Tensor) -> int:
        """Store the memory of the step just decoded; returns its step number."""
        step = self.next_step
        self._entries[step] = MemoryEntry(step, features, pos_enc)
        self.next_step += 1
        oldest_needed = self.next_step - 1 - (self.slots - 1) * self.stride
        for old in [s for s in self._entries if s < oldest_needed]:
            del self._entries[old]
        return step

    def skip(self) -> int:
        """A step that writes no memory (the official GLUS code stores nothing for a frame whose answer is not
        [SEG]); later reads find no entry there. Returns the step number."""
        step = self.next_step
        self.next_step += 1
        oldest_needed = self.next_step - 1 - (self.slots - 1) * self.stride
        for old in [s for s in self._entries if s < oldest_needed]:
            del self._entries[old]
        return step

    def read(self) -> list[tuple[int, MemoryEntry]]:
        """The ``(t_rel, entry)`` pairs for the next step to decode (empty for the first step)."""
        return [(t_rel, self._entries[s]) for t_rel, s in
                selected_steps(self.next_step, self.slots, self.stride) if s in self._entries]

    def detach_(self) -> None:
        """Cut the autograd graph (between training windows, or when a stream goes on and on)."""
        for entry in self._entries.values():
            entry.features = entry.features.detach()
            entry.pos_enc = entry.pos_enc.detach()

    def seed_from(self, step: int) -> MemoryBank:
        """A new bank holding only the memory written at ``step`` (as its step 0).

        Backward propagation from a key frame starts from the key frame's memory alone.
        """
        if step not in self._entries:
            raise KeyError(f"memory step {step} is not in the bank (held: {list(self._entries)})")
        other = MemoryBank(self.slots, self.stride)
        entry = self._entries[step]
        other._entries[0] = MemoryEntry(0, entry.features, entry.pos_enc)
        other.next_step = 1
        return other

    def nbytes(self) -> int:
        return sum(e.features.numel() * e.features.element_size() + e.pos_enc.numel() * e.pos_enc.element_size()
                   for e in self._entries.values())
