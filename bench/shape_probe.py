"""Can the tiny preset's image tower see shape? Supervised probes on one-object scenes of the built-in world.

    python bench/shape_probe.py [--steps 400] [--seeds 0 1 2]

The chain's models read colour from the image but not shape (bench/what_models_see.py). Two questions:
- frozen: does the pre-trained ViT (models/pretrain) encode shape? A linear probe on its [CLS] and mean
  patch features, trained on 3000 scenes, tested on 1000;
- from scratch: can the same architecture learn shape when told directly? The tiny ViT trained as a
  six-way shape classifier for `--steps` steps of batch 32 (about as many images as pre-training sees),
  at the preset's patch size (16) and at 8, on 96 px scenes; test accuracy per seed.
Chance is 1/6. Writes bench/results/shape_probe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from blip.config import load_params  # noqa: E402
from blip.data.world import SHAPES, render, rng_for, sample_scene  # noqa: E402
from blip.inference import load  # noqa: E402
from blip.models.vit import create_vit  # noqa: E402


def scenes(n: int, seed: int, size: int, mean: list[float], std: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` one-object scenes rendered at `size` px, normalised as the models see them, and their shape ids."""
    images, labels = [], []
    for i in range(n):
        rng = rng_for(seed, 7, i)
        scene = sample_scene(rng, max_objects=1)
        pixels = np.asarray(render(scene, size, rng), dtype=np.float32) / 255
        images.append((torch.from_numpy(pixels).permute(2, 0, 1) - torch.tensor(mean)[:, None, None])
                      / torch.tensor(std)[:, None, None])
        labels.append(SHAPES.index(scene.objects[0].shape))
    return torch.stack(images), torch.tensor(labels)


def features(vit: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[CLS] and mean patch token of the ViT's last layer, side by side."""
    with torch.no_grad():
        out = torch.cat([vit.forward_features(images[i:i + 100]) for i in range(0, len(images), 100)])
    return torch.cat([out[:, 0], out[:, 1:].mean(1)], dim=1)


def linear_probe(train_x, train_y, test_x, test_y, epochs: int = 300) -> float:
    """Test accuracy of a softmax regression on standardised features (full-batch Adam)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mu) / sd, (test_x - mu) / sd
    head = torch.nn.Linear(train_x.shape[1], len(SHAPES))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(head(train_x), train_y).backward()
        opt.step()
    return (head(test_x).argmax(1) == test_y).float().mean().item()


def from_scratch(arch, size: int, steps: int, seed: int, data, test) -> float:
    """Test accuracy of the tiny ViT trained from random weights to name the shape."""
    torch.manual_seed(seed)
    vit = create_vit(arch, size)
    head = torch.nn.Linear(arch.width, len(SHAPES))
    opt = torch.optim.AdamW([*vit.parameters(), *head.parameters()], lr=5e-4, weight_decay=0.05)
    x, y = data
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (32,), generator=g)
        opt.zero_grad()
        F.cross_entropy(head(vit.forward_features(x[batch])[:, 0]), y[batch]).backward()
        opt.step()
    vit.eval()
    with torch.no_grad():
        logits = torch.cat([head(vit.forward_features(test[0][i:i + 100])[:, 0]) for i in range(0, len(test[0]), 100)])
    return (logits.argmax(1) == test[1]).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml")
    size, arch = params.active.pretrain.image_size, params.active.model.vision
    train = scenes(3000, 100, size, params.loader.mean, params.loader.std)
    test = scenes(1000, 101, size, params.loader.mean, params.loader.std)
    result: dict = {"image_size": size, "train_scenes": 3000, "test_scenes": 1000, "chance": 1 / len(SHAPES)}
    pretrained = load(ROOT / "models/pretrain", device="cpu", precision="fp32").model.visual_encoder.eval()
    result["frozen_pretrained_linear_probe"] = linear_probe(features(pretrained, train[0]), train[1],
                                                            features(pretrained, test[0]), test[1])
    for patch in (arch.patch_size, 8):
        variant = dataclasses.replace(arch, patch_size=patch)
        start, accs = time.time(), [from_scratch(variant, size, args.steps, s, train, test) for s in args.seeds]
        result[f"from_scratch_patch{patch}"] = {"steps": args.steps, "per_seed": accs,
                                                "median": statistics.median(accs),
                                                "seconds_per_seed": round((time.time() - start) / len(accs), 1)}
        print(patch, accs, flush=True)
    (ROOT / "bench/results/shape_probe.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
