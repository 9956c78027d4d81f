"""Captioning metrics with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr, and SPICE when possible.

SPICE needs Stanford CoreNLP jars that pycocoevalcap fetches from the network on first use; when they
are not already in its lib/ folder, SPICE is reported as skipped with that reason (never downloaded).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed

from blip.evaluate.common import EvalSet, batched_images
from blip.models.generate import GenerationSettings, generate


def spice_status() -> tuple[bool, str]:
    """Whether SPICE can run offline, and why not."""
    import importlib.util

    # pycocoevalcap is a namespace package: no __file__, but its search location is known
    lib = Path(list(importlib.util.find_spec("pycocoevalcap").submodule_search_locations)[0]) / "spice" / "lib"
    if list(lib.glob("stanford-corenlp-*.jar")):
        return True, "ok"
    return False, f"Stanford CoreNLP jars are not in {lib} (pycocoevalcap downloads them; no network here)"


# every metric of the COCO caption evaluation; METEOR is the costly one (a JVM that loads its paraphrase tables,
# about 5 s even for ten captions), so a caller that needs one figure asks for that one
CAPTION_METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "SPICE")


def score_captions(references: dict[str, list[str]], candidates: dict[str, str],
                   metrics: tuple[str, ...] = CAPTION_METRICS) -> dict:
    """COCO caption metrics (those named in `metrics`) of one candidate per id against its references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    unknown = set(metrics) - set(CAPTION_METRICS)
    if unknown:
        raise ValueError(f"unknown caption metric(s) {sorted(unknown)}; the metrics are {', '.join(CAPTION_METRICS)}")
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tok.tokenize({k: [{"caption": candidates[k]}] for k in references})
    out: dict = {}
    if "BLEU" in metrics:
        bleu, _ = Bleu(4).compute_score(gts, res)
        out.update({f"BLEU-{i + 1}": b for i, b in enumerate(bleu)})
    if "METEOR" in metrics:
        out["METEOR"], _ = Meteor().compute_score(gts, res)
    if "ROUGE-L" in metrics:
        out["ROUGE-L"], _ = Rouge().compute_score(gts, res)
    if "CIDEr" in metrics:
        out["CIDEr"], _ = Cider().compute_score(gts, res)
    if "SPICE" in metrics:
        ok, why = spice_status()
        if ok:
            from pycocoevalcap.spice.spice import Spice

            out["SPICE"], _ = Spice().compute_score(gts, res)
        else:
            out["SPICE_skipped"] = why
    return {k: (float(v) if not isinstance(v, str) else v) for k, v in out.items()}


@torch.no_grad()
def evaluate_captioning(model, tokenizer, data: EvalSet, transform, settings: GenerationSettings,
                        batch_size: int = 32, rank: int = 0, world: int = 1,
                        metrics: tuple[str, ...] = CAPTION_METRICS) -> tuple[dict, list[dict]]:
    """Beam-search captions for every image, scored against its human captions (`metrics`, and CIDEr against
    another image's as the chance level). With several ranks (a process group), each captions every `world`-th
    batch and every rank gets all the captions."""
    device = next(model.parameters()).device
    candidates: dict[str, str] = {}
    for start, images in batched_images(data.images, transform, batch_size, device, rank, world):
        for offset, caps in enumerate(generate(model, images, tokenizer, settings)):
            candidates[data.keys[start + offset]] = caps[0]
    if world > 1:
        shares: list[dict] = [{} for _ in range(world)]
        torch.distributed.all_gather_object(shares, candidates)
        candidates = {k: v for share in shares for k, v in share.items()}
    references = dict(zip(data.keys, data.captions))
    scores = score_captions(references, candidates, metrics)
    # chance level: the same captions, each scored against another image's references (CIDEr only)
    shifted = {k: candidates[data.keys[(i + 1) % len(data.keys)]] for i, k in enumerate(data.keys)}
    scores["CIDEr_other_image"] = score_captions(references, shifted, ("CIDEr",))["CIDEr"]
    examples = [{"key": k, "caption": candidates[k], "references": references[k]} for k in data.keys]
    return scores, examples
