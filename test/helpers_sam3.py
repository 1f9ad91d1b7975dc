"""A tiny random SAM 3 written as the released ``facebook/sam3`` folder is, and a scripted scene to force its outputs.

Layout (the release is transformers' own layout): ``config.json`` (``model_type: sam3_video``, a
``detector_config`` and a ``tracker_config``), ``model.safetensors`` (``detector_model.*``, ``tracker_model.*``,
``tracker_neck.*``), the CLIP tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer.json``,
``tokenizer_config.json``, as transformers 5 writes them) and ``processor_config.json`` (``image_processor``,
``video_processor``, ``target_size``). Sizes are tiny: 112 px frames (8 x 8 patches of 14), 32-wide layers,
32 x 32 low-resolution masks, 8 detector queries; the vocabulary is CLIP's byte alphabet without merges.

``ScriptedScene`` forces what the random networks cannot do, at transformers' boundary, from the frames
themselves: the detector's queries become the red disks of the frame it looks at (one query per 8-connected
red component, probability 0.9), and the tracker's memory step for an instance becomes the red component that
overlaps the instance's last visible mask (object score +10; none: -10). Conditioning frames (a detection's mask,
a region's points) run transformers' own code, the region's mask replaced by the red component under its
points. Everything of glus_ros runs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPTokenizer, Sam3VideoConfig, Sam3VideoModel
from transformers.models.sam3.modeling_sam3 import Sam3Model
from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoModel
from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoModel as _VideoModel

SIZE = 112        # frame size the model reads (8 x 8 patches)
PATCH = 14
GRID = SIZE // PATCH
LOW_RES = 4 * GRID  # low-resolution mask size (32)
QUERIES = 8
# layer width: the tracker splits each object pointer into memory-width (64) pieces, so its width must be a
# larger multiple of 64
WIDTH = 128
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
RED = (220, 30, 30)
BLUE = (30, 40, 220)
BACKGROUND = 90


def _byte_alphabet() -> list[str]:
    """CLIP's printable stand-ins for the 256 bytes (the byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(folder: Path) -> int:
    """CLIP BPE files with the byte alphabet and no merges; returns the vocabulary size."""
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"),
                              model_max_length=32, pad_token="<|endoftext|>")
    tokenizer.save_pretrained(str(folder))
    return len(tokens)


def tiny_config(vocab_size: int) -> Sam3VideoConfig:
    vit = {"model_type": "sam3_vit_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 2, "image_size": SIZE, "patch_size": PATCH, "window_size": 4,
           "global_attn_indexes": [1], "pretrain_image_size": SIZE}
    vision = {"backbone_config": vit, "fpn_hidden_size": WIDTH,
              "backbone_feature_sizes": [[4 * GRID, 4 * GRID], [2 * GRID, 2 * GRID], [GRID, GRID]]}
    detector = {
        "vision_config": vision,
        "text_config": {"model_type": "clip_text_model", "vocab_size": vocab_size, "hidden_size": WIDTH,
                        "intermediate_size": 64, "projection_dim": WIDTH, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 32, "bos_token_id": vocab_size - 2,
                        "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1},
        "geometry_encoder_config": {"hidden_size": WIDTH, "num_layers": 1, "num_attention_heads": 2,
                                    "intermediate_size": 64},
        "detr_encoder_config": {"hidden_size": WIDTH, "num_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 64},
        "detr_decoder_config": {"hidden_size": WIDTH, "num_layers": 1, "num_attention_heads": 2,
                                "intermediate_size": 64, "num_queries": QUERIES},
        "mask_decoder_config": {"hidden_size": WIDTH, "num_attention_heads": 2},
    }
    tracker = {
        "vision_config": vision, "image_size": SIZE,
        "prompt_encoder_config": {"hidden_size": WIDTH, "image_size": SIZE, "patch_size": PATCH},
        "mask_decoder_config": {"hidden_size": WIDTH, "mlp_dim": 64, "num_attention_heads": 2,
                                "iou_head_hidden_dim": 32},
        "memory_attention_hidden_size": WIDTH, "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 64, "memory_encoder_hidden_size": WIDTH,
        "memory_encoder_output_channels": 64, "mask_downsampler_embed_dim": WIDTH, "memory_fuser_embed_dim": WIDTH,
        "memory_fuser_intermediate_dim": 64, "num_maskmem": 3, "max_object_pointers_in_encoder": 4,
    }
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=LOW_RES)


def processor_config() -> dict:
    image = {"image_processor_type": "Sam3ImageProcessor", "size": {"height": SIZE, "width": SIZE},
             "mask_size": {"height": LOW_RES, "width": LOW_RES}, "image_mean": list(MEAN), "image_std": list(STD),
             "rescale_factor": 1 / 255, "resample": 2, "do_resize": True, "do_rescale": True, "do_normalize": True,
             "do_convert_rgb": True}
    video = {**image, "video_processor_type": "Sam2VideoVideoProcessor"}
    video.pop("image_processor_type")
    return {"processor_class": "Sam3VideoProcessor", "target_size": SIZE, "image_processor": image,
            "video_processor": video}


def write_tiny_sam3(folder: Path, seed: int = 0, visible_tracker: bool = False,
                    confident_detector: bool = False) -> Path:
    """The tiny model saved in the released layout. ``visible_tracker``: the tracker's object-score head says
    "present" everywhere; ``confident_detector``: every query and the presence token score high (a process that
    cannot be patched then still finds and keeps instances)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder)
    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_config(vocab)).eval()
    with torch.no_grad():
        if visible_tracker:
            head = model.tracker_model.mask_decoder.pred_obj_score_head
            last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.fill_(10.0)
        if confident_detector:   # every query scores sigmoid(12), the presence token sigmoid(10)
            scoring = model.detector_model.dot_product_scoring
            for proj in (scoring.text_proj, scoring.query_proj):
                proj.weight.zero_()
                proj.bias.fill_(3.0)
            presence = [m for m in model.detector_model.detr_decoder.presence_head.modules()
                        if isinstance(m, torch.nn.Linear)][-1]
            presence.weight.zero_()
            presence.bias.fill_(10.0)
    model.save_pretrained(str(folder))
    (folder / "processor_config.json").write_text(json.dumps(processor_config(), indent=2))
    return folder


# --- scenes --------------------------------------------------------------------------------------
def disk_frame(centres: list[tuple[float, float]], colours: list[tuple[int, int, int]] | None = None,
               height: int = 96, width: int = 128, radius: int = 12) -> np.ndarray:
    """A grey frame with filled disks (red unless ``colours`` says otherwise)."""
    frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for i, (x, y) in enumerate(centres):
        colour = colours[i] if colours else RED
        cv2.circle(frame, (round(x), round(y)), radius, colour, thickness=-1)
    return frame


def _red_components(pixels: torch.Tensor) -> list[torch.Tensor]:
    """(3, S, S) normalised model input -> bool (LOW_RES, LOW_RES) masks of its red 8-connected components."""
    rgb = pixels.float() * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    small = F.interpolate(rgb[None], size=(LOW_RES, LOW_RES), mode="area")[0]
    red = ((small[0] > 0.6) & (small[1] < 0.35) & (small[2] < 0.35)).numpy().astype(np.uint8)
    count, labels = cv2.connectedComponents(red, connectivity=8)
    return [torch.from_numpy(labels == i) for i in range(1, count)]


class ScriptedScene:
    """Forces the detector's and the tracker's outputs from the frames' red disks (module doc)."""

    def __init__(self, monkeypatch) -> None:
        self.pixels: list[torch.Tensor] = []     # every frame encoded, in order (the engine's steps)
        self.detections = 0
        scene = self
        original_vision = Sam3Model.get_vision_features
        original_step = Sam3TrackerVideoModel._run_single_frame_inference

        def get_vision_features(model, pixel_values, **kwargs):
            out = original_vision(model, pixel_values=pixel_values, **kwargs)
            out.scene_step = len(scene.pixels)
            scene.pixels.append(pixel_values[0].detach().cpu())
            return out

        def detector_forward(model, vision_embeds=None, text_embeds=None, attention_mask=None, **kwargs):
            scene.detections += 1
            found = _red_components(scene.pixels[vision_embeds.scene_step])
            logits = torch.full((1, QUERIES), -10.0)
            masks = torch.full((1, QUERIES, LOW_RES, LOW_RES), -10.0)
            boxes = torch.zeros(1, QUERIES, 4)
            for q, mask in enumerate(found[:QUERIES]):
                logits[0, q] = 2.2   # sigmoid: 0.9
                masks[0, q][mask] = 10.0
                ys, xs = torch.nonzero(mask, as_tuple=True)
                boxes[0, q] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / LOW_RES
            device = vision_embeds.fpn_hidden_states[0].device
            return type("Out", (), {"pred_logits": logits.to(device), "presence_logits": torch.full((1, 1), 10.0,
                                    device=device), "pred_masks": masks.to(device), "pred_boxes": boxes.to(device)})()

        def tracker_step(model, inference_session, frame_idx, obj_idx, batch_size, is_init_cond_frame,
                         point_inputs, mask_inputs, reverse, prev_sam_mask_logits=None, streaming=False):
            out = original_step(model, inference_session, frame_idx, obj_idx, batch_size, is_init_cond_frame,
                                point_inputs, mask_inputs, reverse, prev_sam_mask_logits, streaming)
            if mask_inputs is not None:
                return out   # a detection's mask: transformers' own conditioning path
            components = _red_components(scene.pixels[frame_idx])
            if point_inputs is not None:   # a region: the red component under its points
                coords = point_inputs["point_coords"][0, 0].float().mean(dim=0) * LOW_RES / SIZE
                x, y = int(coords[0].clamp(0, LOW_RES - 1)), int(coords[1].clamp(0, LOW_RES - 1))
                chosen = next((c for c in components if c[y, x]), None)
            else:
                previous = scene.last_visible(inference_session, obj_idx, frame_idx)
                overlaps = [int((c & previous).sum()) for c in components] if previous is not None else []
                best = int(np.argmax(overlaps)) if overlaps else -1
                chosen = components[best] if best >= 0 and overlaps[best] > 0 else None
            low = torch.full((1, 1, LOW_RES, LOW_RES), -10.0)
            if chosen is not None:
                low[0, 0][chosen] = 10.0
            device = out["pred_masks"].device
            out["pred_masks"] = low.to(device, out["pred_masks"].dtype)
            out["high_res_masks"] = F.interpolate(low, size=(SIZE, SIZE)).to(device)
            present = 10.0 if chosen is not None else -10.0
            out["object_score_logits"] = torch.full_like(out["object_score_logits"], present)
            return out

        monkeypatch.setattr(Sam3Model, "get_vision_features", get_vision_features)
        monkeypatch.setattr(Sam3Model, "forward", detector_forward)
        monkeypatch.setattr(Sam3TrackerVideoModel, "_run_single_frame_inference", tracker_step)
        assert _VideoModel is not None

    @staticmethod
    def last_visible(session, obj_idx: int, frame_idx: int) -> torch.Tensor | None:
        """The instance's newest visible low-res mask before ``frame_idx`` (what the tracker follows)."""
        outputs = session.output_dict_per_obj[obj_idx]
        frames = {**outputs["non_cond_frame_outputs"], **outputs["cond_frame_outputs"]}
        for step in sorted((s for s in frames if s < frame_idx), reverse=True):
            mask = frames[step]["pred_masks"].float().cpu().reshape(LOW_RES, LOW_RES) > 0
            if mask.any():
                return mask
        return None
