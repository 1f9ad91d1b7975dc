"""The official GLUS inference on a whole video (configs with an ``official`` section: glus-s, glus-a).

What github GLUS-video/GLUS (commit 8fd138b) ``inference_iter.py`` + ``GLUSForCausalLM.evaluate`` do, step for
step, re-expressed on glus_ros's modules (the facts are in docs/official_weights.md):

- context frames: ``linspace(0, N, 5)`` as ints gives 4 segments; frame ``start_j + ceil(N / 4) // 2`` of each,
  at most the segment's last frame (``official_context_frames``);
- a pass runs over frames in order; step i (1-based) shows the query frames ``max(0, i-4) .. i-1`` of the pass
  (windows grow 1, 2, 3, 4, then slide) as a multi-turn llava_v1 conversation and decodes only the newest;
- one token is generated (greedy); when it is ``[SEG]`` the prompt is ``text_hidden_fcs`` of the final-norm
  hidden state at the last prompt position (the state that predicted it), else the frame's mask is empty
  and it writes no memory;
- SAM 2: the sparse prompt is that embedding alone, the memory (7 slots, stride 3, no object pointers,
  cleared at the start of a pass) is read with ``maskmem_pos_enc`` only, the memory encoder gets the
  memory-conditioned features and the mask logits resized to the SAM input size; the mask is the low-res
  logits resized once (bilinear) to the frame size, > 0, the object score not used;
- with a start (key) frame K > 0: forward K .. N-1, then backward K .. 0 from a cleared memory (K decoded again).

The modules' own switches (token pooling, CLIP preprocessing, memory position, memory-encoder input, prompt
padding) are read from the config; models/glus-s.yaml sets them to the official values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glus_ros.model.glus import GLUSModel
from glus_ros.model.memory_bank import MemoryBank
from glus_ros.model.official_prompt import IMAGE_PLACEHOLDER, NUM_CONTEXT, OfficialConversation
from glus_ros.model.sam2_head import FrameFeatures
from glus_ros.model.transforms import ClipProcessorSpec, clip_input, clip_processor_input, sam_input, to_tensor


def official_context_frames(num_frames: int, num_context: int = NUM_CONTEXT) -> list[int]:
    """Context frames of the official inference: ``min(start_j + ceil(N / C) // 2, end_j - 1)`` per segment.

    The segments are ``np.linspace(0, N, C + 1).astype(int)``. For N < C a segment can be empty; the official
    code then indexes frame -1, the last one, and so does this.
    """
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    edges = np.linspace(0, num_frames, num_context + 1, dtype=int)
    shift = math.ceil(num_frames / num_context) // 2
    picks = [min(int(edges[j]) + shift, int(edges[j + 1]) - 1) for j in range(num_context)]
    return [p % num_frames for p in picks]


@dataclass
class OfficialStep:
    """One step of a pass (what the parity test compares)."""

    direction: int                 # 0 forward, 1 backward
    frame: int                     # the frame decoded (the newest of the window)
    window: list[int]              # query frames shown, oldest first
    input_ids: list[int]           # with IMAGE_PLACEHOLDER per frame
    token: int                     # the generated token
    hidden: torch.Tensor           # (hidden,) final-norm state at the last prompt position
    prompt: torch.Tensor | None = None        # (prompt_dim,) text_hidden_fcs of it ([SEG] only)
    sparse: torch.Tensor | None = None        # (1, prompt_dim) the SAM sparse prompt
    pix_mem: torch.Tensor | None = None       # (C, h, w) memory-attention output (None: nothing was read)
    low_res: torch.Tensor | None = None       # (4h, 4w) mask logits of the decoder
    mem_feat: torch.Tensor | None = None      # (mem_dim, h, w) what the memory encoder wrote
    mask: np.ndarray | None = None            # (H, W) bool


@dataclass
class OfficialTrace:
    steps: list[OfficialStep] = field(default_factory=list)
    context_frames: list[int] = field(default_factory=list)
    encoded_frames: list[int] = field(default_factory=list)   # frames in the order their visual tokens were made


class OfficialVideoSegmenter:
    """Segments a video with a model for the released weights, exactly as the official inference does."""

    def __init__(self, model: GLUSModel) -> None:
        if model.cfg.official is None:
            raise ValueError(f"model {model.cfg.name} has no 'official' section: use VideoSegmenter")
        self.model = model.eval()
        self.cfg = model.cfg
        self._clip_spec: ClipProcessorSpec | None = None

    # --- per-frame encoders -----------------------------------------------------------------
    @property
    def clip_spec(self) -> ClipProcessorSpec:
        if self._clip_spec is None:
            folder = self.cfg.vlm.vision_tower
            size = self.cfg.vlm.image_size
            spec = ClipProcessorSpec.from_folder(Path(folder)) if folder else ClipProcessorSpec(size, size, size)
            if (spec.crop_height, spec.crop_width) != (size, size):
                raise ValueError(f"the CLIP folder {folder} crops {spec.crop_width}x{spec.crop_height}, the model "
                                 f"config has vlm.image_size {size}")
            self._clip_spec = spec
        return self._clip_spec

    def clip_pixels(self, frame: np.ndarray) -> torch.Tensor:
        """(3, S, S) vision tower input of one frame."""
        if self.cfg.vlm.clip_preprocess == "shortest_edge_crop":
            return clip_processor_input(frame, self.clip_spec)
        return clip_input(to_tensor([frame]), self.cfg.vlm.image_size)[0]

    def _dtype(self, module: torch.nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype

    @torch.inference_mode()
    def frame_tokens(self, frame: np.ndarray) -> torch.Tensor:
        """(T, hidden) visual tokens of one frame: CLIP layer, pooling and projector as configured."""
        vlm = self.model.vlm
        pixels = self.clip_pixels(frame)[None].to(self.model.device, self._dtype(vlm.vision_tower))
        return vlm.encode_frames(pixels)[0]

    @torch.inference_mode()
    def sam_features(self, frame: np.ndarray) -> FrameFeatures:
        sam = self.model.sam
        dtype = self._dtype(sam)
        pixels = sam_input(to_tensor([frame]).to(self.model.device), sam.image_size)
        out = self.model.encode_sam_frames(pixels.to(dtype))
        # the official code casts every level and its position encoding to the input's dtype (the FPN
        # neck's float32 upsampling would otherwise promote bf16 levels)
        return FrameFeatures([f.to(dtype) for f in out.vision_feats], [p.to(dtype) for p in out.vision_pos],
                             out.feat_sizes)

    # --- the MLLM step ----------------------------------------------------------------------
    @torch.inference_mode()
    def answer(self, input_ids: Sequence[int], frame_tokens: Sequence[torch.Tensor]) -> tuple[int, torch.Tensor]:
        """(generated token, final-norm hidden state at the last prompt position) for one prompt."""
        lm = self.model.vlm.language_model
        ids = torch.tensor(list(input_ids), device=self.model.device)
        images = (ids == IMAGE_PLACEHOLDER).nonzero().flatten().tolist()
        if len(images) != len(frame_tokens):
            raise ValueError(f"prompt has {len(images)} image placeholders, {len(frame_tokens)} frames given")
        parts, start = [], 0
        for pos, tokens in zip(images, frame_tokens, strict=True):
            parts.append(lm.embed_tokens(ids[start:pos]))
            parts.append(tokens.to(parts[-1].dtype))
            start = pos + 1
        parts.append(lm.embed_tokens(ids[start:]))
        embeds = torch.cat(parts)[None]
        hidden = lm(inputs_embeds=embeds, use_cache=False).last_hidden_state[0, -1]
        logits = self.model.vlm.llava.lm_head(hidden)
        return int(logits.argmax()), hidden

    # --- the SAM 2 step ---------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, features: FrameFeatures, hidden: torch.Tensor, bank: MemoryBank, size: tuple[int, int],
               step: OfficialStep | None = None) -> tuple[np.ndarray, float]:
        """Mask of one frame from its [SEG] state and the decoder's visibility probability (reported, not used);
        writes the frame's memory."""
        head = self.model.sam
        projection = self.model.seg_projection
        prompt = projection(hidden.to(self._dtype(projection)))
        reads = bank.read()
        pix_feat = head.condition_on_memory(features, bank, farthest_first=True)
        sparse_prompt = prompt[None, None].to(pix_feat.dtype)
        prediction = head.decode(pix_feat, features, sparse_prompt)
        logits = F.interpolate(prediction.low_res_logits.float(), size=size, mode="bilinear", align_corners=False)
        mask = (logits[0, 0] > 0).cpu().numpy()
        mem_feat, mem_pos = head.encode_memory(features, prediction, pix_feat)
        bank.add(mem_feat, mem_pos)
        if step is not None:
            step.prompt, step.sparse = prompt.float().cpu(), sparse_prompt[0].float().cpu()
            step.pix_mem = pix_feat[0].float().cpu() if reads else None
            step.low_res = prediction.low_res_logits[0, 0].float().cpu()
            step.mem_feat = mem_feat[0].float().cpu()
        return mask, float(torch.sigmoid(prediction.object_score.float())[0, 0])

    # --- the video --------------------------------------------------------------------------
    @torch.inference_mode()
    def segment(self, frames: Sequence[np.ndarray], expression: str, start_frame: int = 0,
                progress: Callable[[int], None] | None = None, trace: OfficialTrace | None = None):
        from glus_ros.inference import VideoSegmentation

        if len(frames) == 0:
            raise ValueError("the video has no frames")
        num_frames = len(frames)
        if not 0 <= start_frame < num_frames:
            raise ValueError(f"start frame {start_frame} outside the video of {num_frames} frames")
        height, width = frames[0].shape[:2]
        for i, f in enumerate(frames):
            if f.shape[:2] != (height, width):
                raise ValueError(f"frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {width}x{height}")
        conversation = OfficialConversation(self.model.tokenizer, expression)
        context = official_context_frames(num_frames)
        if trace is not None:
            trace.context_frames = list(context)
        window_size = self.cfg.sampling.num_query
        tokens: dict[int, torch.Tensor] = {}
        masks = np.zeros((num_frames, height, width), dtype=bool)
        scores = np.zeros(num_frames, dtype=np.float32)
        orders = [list(range(start_frame, num_frames))]
        if start_frame > 0:
            orders.append(list(range(start_frame, -1, -1)))
        t0 = time.perf_counter()
        for direction, order in enumerate(orders):
            bank = MemoryBank(self.cfg.memory.slots, self.cfg.memory.stride)  # cleared for every pass
            for i in range(1, len(order) + 1):
                window = order[max(0, i - window_size):i]
                shown = context + window
                for f in shown:
                    if f not in tokens:
                        tokens[f] = self.frame_tokens(frames[f])
                        if trace is not None:
                            trace.encoded_frames.append(f)
                ids = conversation.ids(len(window))
                token, hidden = self.answer(ids, [tokens[f] for f in shown])
                frame = order[i - 1]
                step = None
                if trace is not None:
                    step = OfficialStep(direction, frame, list(window), list(ids), token, hidden.float().cpu())
                    trace.steps.append(step)
                if token == conversation.seg_id:
                    features = self.sam_features(frames[frame])
                    masks[frame], scores[frame] = self.decode(features, hidden, bank, (height, width), step)
                else:  # the official code fills an empty mask and stores no memory for this frame
                    masks[frame] = False
                    scores[frame] = 0.0
                    bank.skip()
                if step is not None:
                    step.mask = masks[frame].copy()
                keep = set(context) | set(order[max(0, i + 1 - window_size):i + 1])
                for f in [f for f in tokens if f not in keep]:
                    del tokens[f]
                if progress is not None and not (direction == 1 and frame == start_frame):
                    progress(1)  # once per frame (the key frame is decoded again by the backward pass)
        elapsed = time.perf_counter() - t0
        return VideoSegmentation(masks, scores, start_frame,
                                 {"total_s": elapsed, "per_frame_s": elapsed / num_frames})


WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def load_official_model(spec: str | Path, checkpoint: str | Path | None, sam2_checkpoint: str | Path | None = None,
                        device: str = "cpu", overrides: dict | None = None, vision_tower: str | Path | None = None,
                        dtype: str | None = None) -> GLUSModel:
    """A released GLUS-S / GLUS-A folder (``checkpoint``) with a local CLIP folder (``vision_tower``, or the
    config's ``vlm.vision_tower``), weights in ``dtype`` ("bf16" by default on CUDA, else "fp32").

    The language model is assigned from the checkpoint without a float32 copy (built on the meta device);
    ``sam2_checkpoint`` (a SAM 2 / 2.1 ``.pt``) is loaded first and then replaced by the release's own
    ``model.visual_model.*`` weights, which are part of what GLUS trained. With ``official.load_weights:
    official_loader`` (the default of glus-s / glus-a) the tensors transformers 4.31 does not load (SAM 2's fuser
    layer scales) keep the official constructor's value, as in the official inference; ``model.load_report`` lists
    them (``initial``).
    """
    from glus_ros.inference import resolve_device
    from glus_ros.model.checkpoints import load_sam2_checkpoint
    from glus_ros.model.config import load_config
    from glus_ros.model.official_checkpoint import load_release
    from glus_ros.model.tokenizer import load_tokenizer

    cfg = load_config(spec, overrides)
    target = resolve_device(device)
    dtype = dtype or ("bf16" if target.type == "cuda" else "fp32")
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (fp32 or bf16)")
    if checkpoint is None:
        raise ValueError(f"model {cfg.name} runs the released GLUS weights: give the release folder with "
                         "--checkpoint DIR (config.json, pytorch_model-*.bin or *.safetensors, tokenizer.model, "
                         "added_tokens.json) and a local CLIP ViT-L/14 folder with --vision-tower DIR")
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
    tower = vision_tower if vision_tower is not None else cfg.vlm.vision_tower
    if tower is not None:
        if not Path(tower).is_dir():
            raise FileNotFoundError(f"vision tower folder {tower} does not exist")
        cfg.vlm.vision_tower = str(Path(tower).resolve())  # its preprocessor_config.json drives the CLIP input
    tokenizer = load_tokenizer(cfg.vlm.tokenizer, ckpt if ckpt.is_dir() else ckpt.parent)
    with torch.random.fork_rng(devices=[]):  # only what the files do not hold keeps this initialisation
        torch.manual_seed(0)
        model = GLUSModel(cfg, tokenizer, empty_llm=True)
    if sam2_checkpoint is not None:
        load_sam2_checkpoint(model.sam.sam, Path(sam2_checkpoint))
    report = load_release(model, ckpt, Path(tower) if tower is not None else None, WEIGHT_DTYPES[dtype])
    model = model.to(WEIGHT_DTYPES[dtype]).to(target).eval()
    model.load_report = report  # what was loaded, and what keeps its initial value as the official loader leaves it
    return model
