"""Judging a caption against its built-in-world scene claim by claim, not word for word.

The strict test (`scene.describes`) accepts only the templates' exact wordings, so "a red circle on a
white background" fails for a scene whose circle is red but whose background is beige, and so does a
fluent caption in a word order the templates never use. Here a caption is read as claims, each checked
against the scene:

- object: "a [size] colour shape" names an object the scene has (its shape; its colour, given the
  shape; its size, when named);
- position: "... in the top left corner", "on the left", "at the top", "in the center" after an object;
- relation: "object to the left of / to the right of / above / below object";
- background: "[texture] colour background";
- count: "a single ...", "two shapes", "three shapes".

A caption is correct when it makes at least one object claim and every claim it makes is true.
"""

from __future__ import annotations

import re
from collections import Counter

from blip.data.text import clean_caption
from blip.world.scene import BACKGROUNDS, COLOURS, SHAPES, SIZES, TEXTURES, Obj, Scene

# the templates' own spatial wording, so a claim is judged exactly as a caption would be written
from blip.world.scene import position as position_of
from blip.world.scene import relation as relation_of

ATTRIBUTES = ("shape", "colour", "size", "position", "relation", "background", "count")

_NP = re.compile(rf"\b(?:({'|'.join(SIZES)}) )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")
_POSITION = re.compile(r" (in the center|on the (?:left|right)|at the (?:top|bottom)|"
                       r"in the (?:top|bottom) (?:left|right) corner)\b")
_RELATION = re.compile(r" (to the left of|to the right of|above|below) an? ")  # all that stands between two objects
_BACKGROUND = re.compile(rf"\b(?:({'|'.join(t for t in TEXTURES if t != 'plain')}) )?"
                         rf"({'|'.join(sorted(BACKGROUNDS, key=len, reverse=True))}) background\b")
_COUNT = re.compile(r"\b(?:a (single)|(two) shapes|(three) shapes)\b")
_NUMBERS = {"single": 1, "two": 2, "three": 3}


def _candidates(scene: Scene, colour: str, shape: str, size: str | None, where: str | None) -> list[Obj]:
    """The objects a noun phrase may name, best fit first: of its colour and shape, then of its size and
    at its position where it says so (a scene may hold two alike)."""
    alike = [o for o in scene.objects if o.colour == colour and o.shape == shape]
    return sorted(alike, key=lambda o: (o.size != size, position_of(o) != where))


def judge(scene: Scene, caption: str) -> dict[str, list[bool]]:
    """Each claim the caption makes, by attribute, as true or false of the scene."""
    text = clean_caption(caption, 10_000)
    claims: dict[str, list[bool]] = {a: [] for a in ATTRIBUTES}
    previous: tuple[re.Match, list[Obj]] | None = None
    for np in _NP.finditer(text):
        size, colour, shape = np.groups()
        where = _POSITION.match(text, np.end())
        objs = _candidates(scene, colour, shape, size, where and where.group(1))
        claims["shape"].append(any(o.shape == shape for o in scene.objects))
        claims["colour"].append(bool(objs))
        if size:
            claims["size"].append(bool(objs) and objs[0].size == size)
        if where:
            claims["position"].append(bool(objs) and position_of(objs[0]) == where.group(1))
        if previous is not None:
            between = _RELATION.fullmatch(text, previous[0].end(), np.start())
            if between:
                claims["relation"].append(any(a is not b and relation_of(a, b) == between.group(1)
                                              for a in previous[1] for b in objs))
        previous = np, objs
    for bg in _BACKGROUND.finditer(text):
        texture, colour = bg.groups()
        claims["background"].append(colour == scene.background and (texture or "plain") == scene.texture)
    for count in _COUNT.finditer(text):
        claims["count"].append(_NUMBERS[next(g for g in count.groups() if g)] == len(scene.objects))
    return claims


def correctness(pairs: list[tuple[Scene, str]]) -> dict:
    """Over (scene, caption) pairs: each attribute's share of true claims (and how many were made), the
    share of captions that are correct (an object named, every claim true), and the share that name an
    object at all."""
    made, true = Counter(), Counter()
    correct = naming = 0
    for scene, caption in pairs:
        claims = judge(scene, caption)
        for attribute, verdicts in claims.items():
            made[attribute] += len(verdicts)
            true[attribute] += sum(verdicts)
        if claims["shape"]:
            naming += 1
            correct += all(all(v) for v in claims.values())
    n = max(1, len(pairs))
    return {"captions": len(pairs), "correct": round(correct / n, 4), "name_an_object": round(naming / n, 4),
            "claims": {a: {"made": made[a], "true": round(true[a] / made[a], 4) if made[a] else None}
                       for a in ATTRIBUTES}}
