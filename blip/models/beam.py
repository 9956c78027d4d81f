"""Beam search that ranks captions as the reference release does.

The release pins transformers 4.15. There a finished hypothesis scores its summed log-probabilities
divided by its whole length, the prompt ([DEC] + "a picture of ") counted and [SEP] not; transformers
5 divides by the generated tokens, [SEP] counted and the prompt not. When hypotheses differ in length
the two pick different captions, so this module runs the 4.15 algorithm on any next-token function:

- each step, log-softmax, the repetition penalty on those log-probabilities, [SEP] barred below
  min_length, then the top 2 x beams (beam, token) continuations of each image by summed score;
- a [SEP] among the best `beams` of them closes a hypothesis; the rest continue, `beams` of them;
- an image is done once it holds `beams` hypotheses and none of its live beams could beat the worst
  (its best summed score over the current length); unfinished beams join at max_length;
- outputs: the best hypotheses, [SEP] appended when shorter than max_length, [PAD] after.

The scores come to the host once per step (one transfer of the top-2k table), where the per-image
bookkeeping is plain Python, as in 4.15.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# next-token logits (rows, vocab) for the rows' ids so far; `reorder` (rows,) says which row of the
# previous step each row continues (None at the first step), for the caller's cache
NextLogits = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class Hypotheses:
    """The best `num_beams` finished hypotheses of one image, as 4.15's BeamHypotheses keeps them."""

    def __init__(self, num_beams: int, length_penalty: float):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.beams: list[tuple[float, list[int]]] = []
        self.worst = 1e9

    def add(self, tokens: list[int], sum_logprobs: float) -> None:
        """Keep a finished hypothesis (its tokens exclude [SEP]) if it is among the best."""
        score = sum_logprobs / len(tokens) ** self.length_penalty
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, cur_len: int) -> bool:
        """Full, and no live beam can score above the worst kept hypothesis."""
        if len(self.beams) < self.num_beams:
            return False
        return self.worst >= best_sum_logprobs / cur_len ** self.length_penalty

    def best(self, n: int) -> list[list[int]]:
        """The n best hypotheses, best first (ties: the later one, as 4.15's sorted + pop)."""
        ranked = sorted(self.beams, key=lambda b: b[0])
        return [ranked.pop()[1] for _ in range(n)]


def _repetition_penalty(scores: torch.Tensor, ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """4.15's penalty on the tokens already in each row: negative scores times it, positive ones over it."""
    seen = scores.gather(1, ids)
    return scores.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))


@torch.no_grad()
def beam_search(next_logits: NextLogits, input_ids: torch.Tensor, num_beams: int, max_length: int, min_length: int,
                eos_id: int, pad_id: int, length_penalty: float = 1.0, repetition_penalty: float = 1.0,
                num_return: int = 1) -> torch.Tensor:
    """Token ids (B * num_return, L) for prompts `input_ids` (B, P): the best hypotheses, prompt included."""
    batch, prompt_len = input_ids.shape
    if num_return > num_beams:
        raise ValueError(f"beam search returns at most num_beams={num_beams} captions per image")
    if max_length <= prompt_len:
        raise ValueError(f"max_length {max_length} leaves no room after the {prompt_len}-token prompt")
    device = input_ids.device
    ids = input_ids.repeat_interleave(num_beams, 0)
    beam_scores = torch.zeros(batch, num_beams, device=device)
    beam_scores[:, 1:] = -1e9  # all beams start equal: only the first may expand at step one
    beam_scores = beam_scores.view(-1)
    hyps = [Hypotheses(num_beams, length_penalty) for _ in range(batch)]
    done = [False] * batch
    reorder = None
    while True:
        cur_len = ids.shape[1]
        scores = F.log_softmax(next_logits(ids, reorder).float(), dim=-1)
        if repetition_penalty != 1.0:
            scores = _repetition_penalty(scores, ids, repetition_penalty)
        if cur_len < min_length:
            scores[:, eos_id] = float("-inf")
        scores = scores + beam_scores[:, None]
        vocab = scores.shape[1]
        top_scores, top = scores.view(batch, num_beams * vocab).topk(2 * num_beams, dim=1)
        top_scores, top_rows, top_tokens = top_scores.tolist(), (top // vocab).tolist(), (top % vocab).tolist()
        next_scores, next_tokens, next_rows = [], [], []
        for b in range(batch):
            if done[b]:  # keeps its rows busy with [PAD]; its hypotheses are final
                next_scores += [0.0] * num_beams
                next_tokens += [pad_id] * num_beams
                next_rows += [b * num_beams] * num_beams
                continue
            kept = 0
            for rank, (score, row, token) in enumerate(zip(top_scores[b], top_rows[b], top_tokens[b])):
                row += b * num_beams
                if token == eos_id:
                    if rank < num_beams:  # a [SEP] outside the best `beams` continuations is not taken
                        hyps[b].add(ids[row].tolist(), score)
                else:
                    next_scores.append(score)
                    next_tokens.append(token)
                    next_rows.append(row)
                    kept += 1
                if kept == num_beams:
                    break
            done[b] = done[b] or hyps[b].is_done(top_scores[b][0], cur_len)
        beam_scores = torch.tensor(next_scores, device=device)
        reorder = torch.tensor(next_rows, device=device)
        ids = torch.cat([ids[reorder], torch.tensor(next_tokens, device=device)[:, None]], dim=1)
        if all(done) or ids.shape[1] >= max_length:
            break
    final_ids, final_scores = ids.tolist(), beam_scores.tolist()
    for b in range(batch):
        if not done[b]:
            for row in range(b * num_beams, (b + 1) * num_beams):
                hyps[b].add(final_ids[row], final_scores[row])
    best = [h for b in range(batch) for h in hyps[b].best(num_return)]
    width = min(max(len(h) for h in best) + 1, max_length)
    out = torch.full((len(best), width), pad_id, dtype=input_ids.dtype)
    for i, h in enumerate(best):
        out[i, :len(h)] = torch.tensor(h, dtype=input_ids.dtype)
        if len(h) < max_length:
            out[i, len(h)] = eos_id
    return out.to(device)
