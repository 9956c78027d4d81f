"""The built-in world: seeded scenes of shapes, rendered as JPEG and described in words.

It stands in for COCO and the web when no real data is given. A scene holds 1..3 objects, each with
a shape, a colour and a size, in its own cell of a 3x3 grid, over a textured background. From the
scene's truth come five varied captions per image (the human-annotated set, COCO's role) and one
alt-text per web image, of which a set share is noisy in three controlled ways:

- mismatched: the caption of another web image;
- partial: the right scene with one attribute (colour, shape, size) or one relation swapped;
- uninformative: file-name-like or boilerplate text.

The kind of every web text, and a true caption, are recorded in the sample's .json under "truth"
for evaluation only. Everything is a pure function of (seed, stream, index), so any image can be
regenerated alone and the output is byte-identical from run to run.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from blip.config import WorldConfig
from blip.data import storage
from blip.data.shards import atomic_write_json, write_shard
from blip.data.text import clean_caption

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
COLOURS = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (240, 200, 20),
           "purple": (148, 70, 190), "orange": (250, 130, 14), "black": (30, 30, 30)}
SIZES = {"small": 0.42, "large": 0.88}  # radius as a share of half a grid cell
TEXTURES = ("plain", "striped", "checkered", "dotted", "speckled")
BACKGROUNDS = {"white": (238, 238, 238), "gray": (170, 170, 172), "beige": (225, 210, 180),
               "pale blue": (190, 215, 235), "pale green": (200, 230, 200)}
ROWS, COLS = ("top", "middle", "bottom"), ("left", "center", "right")
NOISE_KINDS = ("mismatched", "partial", "uninformative")
HUMAN_STREAM, WEB_STREAM = 1, 2
CAPTIONS_PER_IMAGE = 5


@dataclasses.dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cell: tuple[int, int]  # (row, col) in the 3x3 grid


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    texture: str
    background: str

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def rng_for(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator behind one image: independent of every other image's."""
    return np.random.default_rng([seed, stream, index])


def sample_scene(rng: np.random.Generator, max_objects: int) -> Scene:
    """Draw a scene: 1..max_objects objects in distinct cells, a texture and a background colour."""
    n = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(9, size=n, replace=False)
    objects = tuple(Obj(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), str(rng.choice(list(SIZES))),
                        (int(c) // 3, int(c) % 3)) for c in cells)
    return Scene(objects, str(rng.choice(TEXTURES)), str(rng.choice(list(BACKGROUNDS))))


# ---------------------------------------------------------------------------------------- drawing

def _texture(scene: Scene, side: int, rng: np.random.Generator) -> np.ndarray:
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32)
    img = np.broadcast_to(base, (side, side, 3)).copy()
    y, x = np.mgrid[0:side, 0:side]
    period = int(rng.integers(side // 16, side // 8))
    if scene.texture == "striped":
        direction = int(rng.integers(0, 3))
        coord = (x, y, x + y)[direction]
        img[(coord // period) % 2 == 1] *= 0.82
    elif scene.texture == "checkered":
        img[((x // period) + (y // period)) % 2 == 1] *= 0.84
    elif scene.texture == "dotted":
        cx, cy = (x % period) - period / 2, (y % period) - period / 2
        img[cx * cx + cy * cy < (period / 5) ** 2] *= 0.7
    elif scene.texture == "speckled":
        img += rng.normal(0, 18, size=(side, side, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    if shape == "square":
        k, radii, start = 4, [r * 0.9], np.pi / 4
    elif shape == "diamond":
        k, radii, start = 4, [r], 0.0
    elif shape == "triangle":
        k, radii, start = 3, [r], -np.pi / 2
    elif shape == "hexagon":
        k, radii, start = 6, [r], turn
    else:  # star: ten vertices alternating outer and inner radius
        k, radii, start = 10, [r, r * 0.45], -np.pi / 2
    angles = start + np.arange(k) * 2 * np.pi / k
    return [(cx + radii[i % len(radii)] * np.cos(a) * (1.42 if shape == "square" else 1),
             cy + radii[i % len(radii)] * np.sin(a) * (1.42 if shape == "square" else 1))
            for i, a in enumerate(angles)]


def render(scene: Scene, size: int, rng: np.random.Generator,
           shift: list[tuple[float, float]] | None = None) -> Image.Image:
    """Draw the scene at twice `size` (smooth edges after downsampling) and return an RGB image; `shift` moves
    each object by (columns, rows) of the grid (a video frame's motion)."""
    side = 2 * size
    img = Image.fromarray(_texture(scene, side, rng))
    draw = ImageDraw.Draw(img)
    cell = side / 3
    for i, obj in enumerate(scene.objects):
        jitter = rng.uniform(-0.12, 0.12, size=2) * cell
        dx, dy = shift[i] if shift else (0.0, 0.0)
        cx, cy = (obj.cell[1] + 0.5 + dx) * cell + jitter[0], (obj.cell[0] + 0.5 + dy) * cell + jitter[1]
        r = SIZES[obj.size] * cell / 2
        colour = tuple(int(c) for c in np.clip(np.array(COLOURS[obj.colour]) + rng.integers(-12, 13, 3), 0, 255))
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(_polygon(obj.shape, cx, cy, r * (0.72 if obj.shape == "square" else 1),
                                  float(rng.uniform(0, np.pi / 3))), fill=colour)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG bytes (Pillow's encoder is deterministic for fixed input and quality)."""
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


# ---------------------------------------------------------------------------------------- words

def noun_phrase(obj: Obj, with_size: bool) -> str:
    words = ([obj.size] if with_size else []) + [obj.colour, obj.shape]
    return "a " + " ".join(words)


def _relation(a: Obj, b: Obj) -> str:
    """Where a is relative to b, along the axis where they differ most (ties: horizontal)."""
    dr, dc = a.cell[0] - b.cell[0], a.cell[1] - b.cell[1]
    if abs(dc) >= abs(dr):
        return "to the left of" if dc < 0 else "to the right of"
    return "above" if dr < 0 else "below"


def _position(obj: Obj) -> str:
    row, col = ROWS[obj.cell[0]], COLS[obj.cell[1]]
    if row == "middle" and col == "center":
        return "in the center"
    if row == "middle":
        return f"on the {col}"
    if col == "center":
        return f"at the {row}"
    return f"in the {row} {col} corner"


def background_phrase(scene: Scene) -> str:
    texture = "" if scene.texture == "plain" else scene.texture + " "
    return f"{texture}{scene.background} background"


def caption_pool(scene: Scene, order: list[int], with_size: list[bool]) -> list[str]:
    """Every caption the templates say truthfully, objects taken in `order`, sizes named where asked."""
    objs = [scene.objects[i] for i in order]
    n = [noun_phrase(o, s) for o, s in zip(objs, with_size)]
    bg = background_phrase(scene)
    pool = [f"{n[0]} on a {bg}", f"a picture of {n[0]} {_position(objs[0])}", f"an image showing {n[0]}"]
    if len(objs) == 1:
        pool += [f"there is {n[0]} {_position(objs[0])}", f"{n[0]} against a {bg}", f"a {bg} with {n[0]}",
                 f"a single {objs[0].colour} {objs[0].shape} {_position(objs[0])} on a {bg}"]
    else:
        rel = _relation(objs[0], objs[1])
        back = _relation(objs[1], objs[0])
        pool += [f"{n[0]} {rel} {n[1]}", f"{n[1]} {back} {n[0]}", f"a picture of {n[0]} {rel} {n[1]} on a {bg}",
                 f"there is {n[1]} {_position(objs[1])} and {n[0]} {_position(objs[0])}"]
        if len(objs) == 2:
            pool += [f"{n[0]} and {n[1]} on a {bg}", f"two shapes, {n[0]} and {n[1]}"]
        else:
            rel2 = _relation(objs[2], objs[1])
            pool += [f"{n[0]}, {n[1]} and {n[2]} on a {bg}", f"three shapes, {n[0]}, {n[1]} and {n[2]}",
                     f"{n[2]} {rel2} {n[1]}, and {n[0]}"]
    return pool


def random_pool(scene: Scene, rng: np.random.Generator) -> list[str]:
    """The caption pool with a random object order and each size named with probability 0.6."""
    order = [int(i) for i in rng.permutation(len(scene.objects))]
    return caption_pool(scene, order, [bool(rng.random() < 0.6) for _ in order])


def human_captions(scene: Scene, rng: np.random.Generator) -> list[str]:
    """Five distinct captions, as five annotators might write."""
    pool = list(dict.fromkeys(random_pool(scene, rng)))
    picks = rng.choice(len(pool), size=CAPTIONS_PER_IMAGE, replace=False)
    return [pool[i] for i in picks]


def true_wordings(scene: Scene) -> set[str]:
    """Every caption the templates say truthfully about a scene: all object orders, all size choices."""
    k = len(scene.objects)
    return {c for order in itertools.permutations(range(k))
            for sizes in itertools.product([False, True], repeat=k)
            for c in caption_pool(scene, list(order), list(sizes))}


def scene_from_json(d: dict) -> Scene:
    """The inverse of `Scene.to_json` (truth records in web samples hold scenes as JSON)."""
    objs = tuple(Obj(o["shape"], o["colour"], o["size"], tuple(o["cell"])) for o in d["objects"])
    return Scene(objs, d["texture"], d["background"])


def describes(scene: Scene, text: str) -> bool:
    """Whether `text`, cleaned, is one of the scene's true wordings (the truth for synthetic captions)."""
    return clean_caption(text, 10_000) in {clean_caption(w, 10_000) for w in true_wordings(scene)}


def _alt_text_style(caption: str, rng: np.random.Generator) -> str:
    """Web alt-texts are capitalised and punctuated at random; clean-up has to undo it."""
    if rng.random() < 0.5:
        caption = caption[0].upper() + caption[1:]
    return caption + str(rng.choice(["", ".", "!", " - photo", "..."]))


def _swap_attribute(scene: Scene, rng: np.random.Generator) -> tuple[Scene, str]:
    objs = list(scene.objects)
    k = int(rng.integers(len(objs)))
    choices = ["colour", "shape", "size"] + (["relation"] if len(objs) > 1 else [])
    what = str(rng.choice(choices))
    o = objs[k]
    if what == "relation":  # two objects trade places: every relation between them flips
        j = (k + 1 + int(rng.integers(len(objs) - 1))) % len(objs)
        other = objs[j]
        objs[k], objs[j] = dataclasses.replace(o, cell=other.cell), dataclasses.replace(other, cell=o.cell)
        return dataclasses.replace(scene, objects=tuple(objs)), f"relation {o.colour} {o.shape}<->{other.colour} {other.shape}"
    values = {"colour": list(COLOURS), "shape": list(SHAPES), "size": list(SIZES)}[what]
    new = str(rng.choice([v for v in values if v != getattr(o, what)]))
    objs[k] = dataclasses.replace(o, **{what: new})
    return dataclasses.replace(scene, objects=tuple(objs)), f"{what} {getattr(o, what)}->{new}"


def partial_caption(scene: Scene, rng: np.random.Generator) -> tuple[str, str]:
    """A caption of the scene with one attribute or relation wrong; returns (caption, what changed).

    Both scenes are worded with every size named and in every object order, so a wording of the
    changed scene that is not among the true scene's wordings states something false.
    """
    def wordings(s: Scene) -> set[str]:
        k = len(s.objects)
        return {c for order in itertools.permutations(range(k)) for c in caption_pool(s, list(order), [True] * k)}

    true = wordings(scene)
    for _ in range(20):
        wrong_scene, detail = _swap_attribute(scene, rng)
        false = sorted(wordings(wrong_scene) - true)
        if false:
            return false[int(rng.integers(len(false)))], detail
    raise RuntimeError(f"could not make a partly wrong caption for {scene}")


def uninformative_text(rng: np.random.Generator) -> str:
    """File-name-like or boilerplate alt-text that says nothing about the image."""
    n = int(rng.integers(1000, 99999))
    return str(rng.choice([f"IMG_{n}.jpg", f"DSC{n:05d}", f"image {n % 20 + 1} of {n % 20 + 21}",
                           "click here to enlarge", "stock photo", "untitled", f"photo_{n}_final.png",
                           "free download high quality wallpaper", "product image", f"screenshot {n}",
                           "view larger", "no description available"]))


# ---------------------------------------------------------------------------------------- sets

def noise_kinds(cfg: WorldConfig, seed: int) -> list[str]:
    """Exact per-kind counts (largest remainder), assigned to web images in a seeded order."""
    total = cfg.web.images
    noisy = round(cfg.web.noise_fraction * total)
    mix = dataclasses.asdict(cfg.web.noise_mix)
    exact = {k: noisy * v for k, v in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: noisy - sum(counts.values())]:
        counts[k] += 1
    kinds = ["clean"] * (total - noisy) + [k for k in NOISE_KINDS for _ in range(counts[k])]
    np.random.default_rng([seed, WEB_STREAM, 0xC0FFEE]).shuffle(kinds)
    return kinds


def web_alt_text(i: int, kind: str, scenes: list[Scene], rng: np.random.Generator) -> tuple[str, dict]:
    """The alt-text of web image i and its hidden truth record."""
    true_caption = str(rng.choice(random_pool(scenes[i], rng)))
    truth = {"kind": kind, "true_caption": true_caption, "scene": scenes[i].to_json()}
    if kind == "clean":
        text = true_caption
    elif kind == "mismatched":
        j = (i + 1 + int(rng.integers(len(scenes) - 1))) % len(scenes)
        text = str(rng.choice(random_pool(scenes[j], rng)))
        truth["detail"] = f"caption of web image {j}"
    elif kind == "partial":
        text, truth["detail"] = partial_caption(scenes[i], rng)
    else:
        return uninformative_text(rng), truth
    return _alt_text_style(text, rng), truth


def write_human(cfg: WorldConfig, seed: int, out_dir: Path) -> dict:
    """Human-annotated set: images/ + karpathy.json (one entry per image, five captions, split)."""
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    splits = ["train"] * cfg.human.train + ["val"] * cfg.human.val + ["test"] * cfg.human.test
    entries = []
    for i, split in enumerate(splits):
        rng = rng_for(seed, HUMAN_STREAM, i)
        scene = sample_scene(rng, cfg.max_objects)
        name = f"images/{i:06d}.jpg"
        storage.write_bytes(out_dir / name, encode_jpeg(render(scene, cfg.image_size, rng), cfg.jpeg_quality))
        entries.append({"image": name, "caption": human_captions(scene, rng), "split": split, "image_id": i})
    atomic_write_json(out_dir / "karpathy.json", entries)
    return {"entries": entries}


def write_web(cfg: WorldConfig, seed: int, out_dir: Path) -> dict:
    """Web set in img2dataset's webdataset layout: 00000.tar, ... with .jpg/.txt/.json per sample, and each shard's
    00000_stats.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = cfg.web.images
    rngs = [rng_for(seed, WEB_STREAM, i) for i in range(n)]
    scenes = [sample_scene(r, cfg.max_objects) for r in rngs]
    kinds = noise_kinds(cfg, seed)
    texts, samples, shard = [], [], 0
    for i in range(n):
        img = render(scenes[i], cfg.image_size, rngs[i])
        text, truth = web_alt_text(i, kinds[i], scenes, rngs[i])
        key = f"{shard:05d}{len(samples):04d}"
        meta = {"url": f"world://web/{key}.jpg", "caption": text, "key": key, "status": "success",
                "error_message": None, "width": cfg.image_size, "height": cfg.image_size,
                "original_width": cfg.image_size, "original_height": cfg.image_size, "exif": "{}",
                "truth": truth}
        samples.append({"__key__": key, "jpg": encode_jpeg(img, cfg.jpeg_quality), "txt": text.encode(),
                        "json": json.dumps(meta, sort_keys=True).encode()})
        texts.append(text)
        if len(samples) == cfg.web.shard_size or i == n - 1:
            write_shard(out_dir / f"{shard:05d}.tar", samples)
            # img2dataset's per-shard statistics, which registration reads the sample count from
            atomic_write_json(out_dir / f"{shard:05d}_stats.json",
                              {"count": len(samples), "successes": len(samples), "failed_to_download": 0,
                               "failed_to_resize": 0, "status_dict": {"success": len(samples)}})
            shard, samples = shard + 1, []
    return {"texts": texts, "kinds": kinds}


def generate_world(cfg: WorldConfig, seed: int, out_dir: str | Path) -> dict:
    """Write the human set and the web set under `out_dir`; returns the world's statistics."""
    out_dir = Path(out_dir)
    human = write_human(cfg, seed, out_dir / "human")
    web = write_web(cfg, seed, out_dir / "web")
    human_texts = [c for e in human["entries"] for c in e["caption"]]
    words = {w for t in human_texts + web["texts"] for w in clean_caption(t, 10_000).split()}
    split_counts = {s: sum(e["split"] == s for e in human["entries"]) for s in ("train", "val", "test")}
    return {
        "human": {"images": split_counts, "images_total": len(human["entries"]), "captions": len(human_texts)},
        "web": {"images": len(web["kinds"]),
                "noise": {k: web["kinds"].count(k) for k in ("clean",) + NOISE_KINDS},
                "noise_fraction": round(sum(k != "clean" for k in web["kinds"]) / max(1, len(web["kinds"])), 6)},
        "vocabulary_words": len(words),
        "image_size": cfg.image_size,
    }
