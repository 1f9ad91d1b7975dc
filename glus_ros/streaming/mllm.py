"""The MLLM side of the streaming engine: what a re-grounding reads (a snapshot of the newest window) and how each
kind of target is grounded on it.

Referring targets are batched into one pass of the own prompt format; region targets ("track <region>") into
another; each question target gets its own (generated once, then teacher-forced); with the released weights
(``loop.prompt_format: llava_v1``) every target gets the official step (``core.grounders.ConversationGrounder``).
Per-frame vision-tower outputs are computed once and kept while the frame is in the history; the context
prefix cache reuses the LLM's keys/values over unchanged context frames.

A mixin of :class:`~glus_ros.streaming.engine.StreamingEngine`: it reads the engine's model, config, history
stores (``_clip_inputs``, ``_clip_embeds``, ``_seqs``, ``_sampler``, ``_newest_image``, ``_epoch``), locks and
prefix cache. Engines for other backends override :meth:`_compute_groundings` / :meth:`_snapshot`.
"""

from __future__ import annotations

import torch

from glus_ros.core.grounders import ConversationGrounder
from glus_ros.model.point_head import decode_points
from glus_ros.model.region import TRACK_REGION_QUESTION
from glus_ros.streaming.tracks import Grounding, TargetTrack, Window


class WindowGrounding:
    """Re-grounding targets on a window of the stream (mixin of the streaming engine; see the module doc)."""

    def _snapshot(self) -> Window:
        """The newest frame's window (call with the model lock held)."""
        context = self._sampler.context_frames()
        query = self._sampler.query_frames()
        step = query[-1]
        with self._frames_lock:
            inputs = {s: self._clip_inputs[s] for s in dict.fromkeys(context + query)}
            seq = self._seqs[step]
        assert self._newest_image is not None
        return Window(step, seq, self._epoch, context, query, inputs, self._newest_image)

    def _compute_groundings(self, window: Window, targets: list[TargetTrack]) -> list[tuple[TargetTrack, Grounding]]:
        """One MLLM pass per kind of target (referring targets batched, regions batched, each question alone)."""
        with self._mllm_lock:
            results: list[tuple[TargetTrack, Grounding]] = []
            if self.conversation:
                return [(t, self._ground_conversation(window, t)) for t in targets]
            referring = [t for t in targets if t.kind == "expression"]
            if referring:
                prompts, points, grid = self._ground(window, [t.spec.expression for t in referring])
                for i, target in enumerate(referring):
                    results.append((target, Grounding(
                        window.step, window.seq, window.epoch, prompt=prompts[i:i + 1],
                        grid=None if grid is None else grid[i:i + 1], points=None if points is None else points[i])))
            results += self._ground_regions(window, [t for t in targets if t.kind == "region"])
            for target in targets:
                if target.kind == "question":
                    results.append((target, self._ground_question(window, target)))
            return results

    def _window(self, window: Window, batch: int) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor | None]:
        """Context (B, Nc, T, D) and query window (B, Nq, T, D) embeddings for ``batch`` prompts, the
        newest frame's query slot (padding repeats the newest frame, so any slot >= it works) and the
        context frames' pixels (B, Nc, 3, S, S) for a motion field (None without context frames)."""
        context, query = window.context, window.query
        num_query = self.model.cfg.sampling.num_query
        padded = query + [query[-1]] * (num_query - len(query))  # stream start: repeat the newest frame
        embeds = self._embeds(window, context + padded)
        context_embeds = embeds[None, : len(context)].expand(batch, -1, -1, -1)
        query_embeds = embeds[None, len(context):].expand(batch, -1, -1, -1)
        pixels = None
        if context:
            pixels = torch.stack([window.inputs[s] for s in context])[None].expand(batch, -1, -1, -1, -1)
        return context_embeds, query_embeds, len(query) - 1, pixels

    def _ground(self, window: Window, expressions: list[str]) -> tuple[
            torch.Tensor, list[list[tuple[float, float]]] | None, torch.Tensor | None]:
        """One batched MLLM pass over (context, query window) -> (B, prompt_dim) prompts for the newest frame,
        the point head's normalised points for it (None without a point head) and its grounding maps
        (B, G, G) (None without one)."""
        context_embeds, query_embeds, newest, context_pixels = self._window(window, len(expressions))
        with self._tokenizer_lock:
            out = self.model.seg_prompts(context_embeds, query_embeds, expressions, context_pixels=context_pixels,
                                         **({"prefix_cache": self._prefix_cache} if self._prefix_cache else {}))
        points = None
        if self.model.point_head is not None and self.model.cfg.points is not None:
            states = out.query_states[:, newest:newest + 1] if out.query_states is not None else None
            raw = self.model.points_from_seg(out.seg_hidden[:, newest:newest + 1], states).float()
            points = [frames[0] for frames in decode_points(raw, self.model.cfg.points.threshold)]
        grid = out.grounding[:, newest] if out.grounding is not None else None
        return out.prompts[:, newest], points, grid

    def _conversation_for(self, expression: str) -> ConversationGrounder:
        """The official conversation of an expression (its prompt ids cached per number of turns)."""
        grounder = self._conversations.get(expression)
        if grounder is None:
            grounder = self._conversations[expression] = ConversationGrounder(self.model, None, expression)
        return grounder

    def _ground_conversation(self, window: Window, target: TargetTrack) -> Grounding:
        """The released weights' official step for the window's newest frame: the newest query frames as consecutive
        turns, the context frames first; one generated token. [SEG] -> the prompt; anything else -> no new prompt."""
        steps = window.context + window.query
        tokens = self._embeds(window, steps)
        with self._tokenizer_lock:
            grounder = self._conversation_for(target.spec.expression)
        answer = grounder.step(list(tokens), len(window.context), len(window.query), self._prefix_cache)
        prompt = answer.frames[-1].prompt
        return Grounding(window.step, window.seq, window.epoch, prompt=prompt, no_seg=prompt is None)

    def _ground_regions(self, window: Window, targets: list[TargetTrack]) -> list[tuple[TargetTrack, Grounding]]:
        """Prompts of "track <region>" for the newest frame in one batched MLLM pass; a region that does not fit
        the frame (first grounding before any frame size was known) gives a grounding with its error."""
        results, ready, embeds = [], [], []
        for target in targets:
            embed = target.region_embed
            if embed is None:  # first grounding: the newest frame is the one the region refers to
                try:
                    embed = self.model.encode_regions({0: window.image}, [target.spec.region])
                except ValueError as exc:
                    results.append((target, Grounding(window.step, window.seq, window.epoch, error=exc)))
                    continue
            ready.append(target)
            embeds.append(embed)
        if ready:
            context_embeds, query_embeds, newest, _pixels = self._window(window, len(ready))
            with self._tokenizer_lock:
                out = self.model.grounded_prompts(context_embeds, query_embeds, [TRACK_REGION_QUESTION] * len(ready),
                                                  region_embeds=embeds)
            for target, embed, prompts in zip(ready, embeds, out.prompts, strict=True):
                results.append((target, Grounding(  # one [SEG] per query frame, as the referring path
                    window.step, window.seq, window.epoch, prompt=prompts[newest:newest + 1],
                    region_embed=embed if target.region_embed is None else None)))
        return results

    def _ground_question(self, window: Window, target: TargetTrack) -> Grounding:
        """The first grounding generates the answer (kept by the target when applied); later ones teacher-force
        it on the current window (one MLLM pass each) to refresh every grounded phrase's [SEG] prompt."""
        result = Grounding(window.step, window.seq, window.epoch)
        context_embeds, query_embeds, _newest, _pixels = self._window(window, 1)
        question = target.spec.expression
        with self._tokenizer_lock:
            if target.answer_ids is None:
                generated = self.model.generate_answer(context_embeds, query_embeds, question,
                                                       self.config.answer_tokens)
                grounded = generated.answer.grounded
                slots = [p.seg_index for p in grounded]
                result.answer = (list(generated.token_ids), generated.answer.text,
                                 [(p.text, p.start, p.end) for p in grounded], slots)
                prompts = generated.prompts
            elif target.seg_slots:
                slots = target.seg_slots
                prompts = self.model.grounded_prompts(context_embeds, query_embeds, question,
                                                      answer_ids=[target.answer_ids]).prompts[0]
            else:
                return result
        if slots:
            first, *rest = slots
            result.prompt = prompts[first:first + 1]
            result.phrase_prompts = [prompts[slot:slot + 1] for slot in rest]
        return result

    def _embeds(self, window: Window, steps: list[int]) -> torch.Tensor:
        with self._frames_lock:
            known = {s: self._clip_embeds[s] for s in steps if s in self._clip_embeds}
        missing = [s for s in dict.fromkeys(steps) if s not in known]
        if missing:
            tower_dtype = next(self.model.vlm.vision_tower.parameters()).dtype
            encoded = self.model.encode_clip_frames(torch.stack([window.inputs[s] for s in missing]).to(tower_dtype))
            with self._frames_lock:
                for s, e in zip(missing, encoded, strict=True):
                    known[s] = e
                    if s in self._clip_inputs and window.epoch == self._epoch:  # still in the history
                        self._clip_embeds[s] = e
        return torch.stack([known[s] for s in steps])
