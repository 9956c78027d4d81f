"""The built-in world: seeded scenes of shapes, rendered as JPEG and described in words.

It stands in for COCO and the web when no real data is given. A scene holds 1..3 objects, each with
a shape, a colour and a size, in its own cell of a 3x3 grid, over a textured background. From the
scene's truth come five varied captions per image (the human-annotated set, COCO's role) and one
alt-text per web image, of which a set share is noisy in three controlled ways:

- mismatched: the caption of another web image;
- partial: the right scene with one attribute (colour, shape, size) or one relation swapped;
- uninformative: file-name-like or boilerplate text.

This module holds the scenes, their drawing and their wordings; `generate` writes the sets, and each
transfer task's module its own. Everything is a pure function of (seed, stream, index), so any image
can be regenerated alone and the output is byte-identical from run to run.
"""

from __future__ import annotations

import dataclasses
import io
import itertools

import numpy as np
from PIL import Image, ImageDraw

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


def relation(a: Obj, b: Obj) -> str:
    """Where a is relative to b, along the axis where they differ most (ties: horizontal)."""
    dr, dc = a.cell[0] - b.cell[0], a.cell[1] - b.cell[1]
    if abs(dc) >= abs(dr):
        return "to the left of" if dc < 0 else "to the right of"
    return "above" if dr < 0 else "below"


def position(obj: Obj) -> str:
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
    pool = [f"{n[0]} on a {bg}", f"a picture of {n[0]} {position(objs[0])}", f"an image showing {n[0]}"]
    if len(objs) == 1:
        pool += [f"there is {n[0]} {position(objs[0])}", f"{n[0]} against a {bg}", f"a {bg} with {n[0]}",
                 f"a single {objs[0].colour} {objs[0].shape} {position(objs[0])} on a {bg}"]
    else:
        rel = relation(objs[0], objs[1])
        back = relation(objs[1], objs[0])
        pool += [f"{n[0]} {rel} {n[1]}", f"{n[1]} {back} {n[0]}", f"a picture of {n[0]} {rel} {n[1]} on a {bg}",
                 f"there is {n[1]} {position(objs[1])} and {n[0]} {position(objs[0])}"]
        if len(objs) == 2:
            pool += [f"{n[0]} and {n[1]} on a {bg}", f"two shapes, {n[0]} and {n[1]}"]
        else:
            rel2 = relation(objs[2], objs[1])
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
    """The inverse of `Scene.to_json` (the world's truth holds scenes as JSON)."""
    objs = tuple(Obj(o["shape"], o["colour"], o["size"], tuple(o["cell"])) for o in d["objects"])
    return Scene(objs, d["texture"], d["background"])


def describes(scene: Scene, text: str) -> bool:
    """Whether `text`, cleaned, is one of the scene's true wordings (the truth for synthetic captions)."""
    return clean_caption(text, 10_000) in {clean_caption(w, 10_000) for w in true_wordings(scene)}


def alt_text_style(caption: str, rng: np.random.Generator) -> str:
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
