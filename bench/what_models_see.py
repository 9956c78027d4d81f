"""Which attributes of a scene the fine-tuned models read from the image, on the built-in world's test split.

    python bench/what_models_see.py            # models/captioner and models/filter of this workspace

- captioner: teacher-forced next-token accuracy on the colour words and on the shape words of each test
  image's first caption, with the right image and with another image's (the batch rolled by one). A word
  the model reads from the image is predicted better with the right one;
- filter: ROC AUC of ITM, the true caption against the same caption with one colour word swapped, and
  against it with one shape word swapped (0.5: blind to that attribute).

Writes bench/results/what_models_see.json.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.data.world import COLOURS, SHAPES  # noqa: E402
from blip.evaluate.common import roc_auc  # noqa: E402
from blip.inference import load  # noqa: E402
from blip.models.blip import DEC_ID, _ones  # noqa: E402
from blip.tokenizer import tokenize  # noqa: E402

WORLD = ROOT / "data/world/human"


def test_split() -> list[dict]:
    """The world's human test images with their captions."""
    return [x for x in json.loads((WORLD / "karpathy.json").read_text()) if x["split"] == "test"]


@torch.no_grad()
def captioner_reads(model_dir: Path, items: list[dict]) -> dict:
    """Teacher-forced accuracy on colour and shape words, with the right image and with another image's."""
    blip = load(model_dir, device="cpu", precision="fp32")
    model, tok = blip.model, blip.tokenizer
    embeds = model.image_embeds(blip.images([Image.open(WORLD / x["image"]) for x in items]))
    ids, mask = tokenize(tok, [model.cfg.prompt + x["caption"][0] for x in items], 40)
    dec = ids.clone()
    dec[:, 0] = DEC_ID
    labels = dec[:, 1:]
    words = np.array(tok.convert_ids_to_tokens(labels.flatten().tolist())).reshape(labels.shape)
    out = {}
    for name, image_embeds in (("right_image", embeds), ("another_image", embeds.roll(1, 0))):
        hidden = model.text_decoder.bert(dec, attention_mask=mask, encoder_hidden_states=image_embeds,
                                         encoder_attention_mask=_ones(image_embeds), is_decoder=True).last_hidden_state
        predicted = model.text_decoder.cls(hidden[:, :-1]).argmax(-1)
        for attribute, vocab in (("colour", COLOURS), ("shape", SHAPES)):
            where = torch.from_numpy(np.isin(words, list(vocab)))
            out[f"{attribute}_{name}"] = round((predicted[where] == labels[where]).float().mean().item(), 4)
            out[f"{attribute}_words"] = int(where.sum())
    out["shape_chance"] = round(1 / len(SHAPES), 4)
    return out


def _swap(text: str, vocab: list[str], rng: random.Random) -> str | None:
    words = text.split()
    at = [i for i, w in enumerate(words) if w in vocab]
    if not at:
        return None
    i = rng.choice(at)
    words[i] = rng.choice([v for v in vocab if v != words[i]])
    return " ".join(words)


def filter_reads(model_dir: Path, items: list[dict], seed: int = 0) -> dict:
    """ITM AUC of true captions against the same captions with one colour, or one shape, swapped."""
    blip, rng = load(model_dir, device="cpu", precision="fp32"), random.Random(seed)
    scores: dict[str, list[float]] = {"true": [], "colour": [], "shape": []}
    for x in items:
        image = Image.open(WORLD / x["image"])
        for caption in x["caption"][:2]:
            colour, shape = _swap(caption, list(COLOURS), rng), _swap(caption, list(SHAPES), rng)
            if colour is None or shape is None:
                continue
            for key, s in zip(scores, blip.score(image, [caption, colour, shape])):
                scores[key].append(s["itm"])
    true = np.array(scores["true"])
    return {"pairs": len(true), "itm_auc_true_vs_colour_swapped": round(roc_auc(true, np.array(scores["colour"])), 4),
            "itm_auc_true_vs_shape_swapped": round(roc_auc(true, np.array(scores["shape"])), 4)}


def main() -> None:
    torch.manual_seed(0)
    items = test_split()
    result = {"captioner": captioner_reads(ROOT / "models/captioner", items),
              "filter": filter_reads(ROOT / "models/filter", items), "test_images": len(items)}
    out = ROOT / "bench/results/what_models_see.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
