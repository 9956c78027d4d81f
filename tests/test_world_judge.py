"""The claim-by-claim judge of captions on the built-in world: every true wording passes, the world's
partly wrong and mismatched captions fail, and each wrong attribute is named."""

import numpy as np

from blip.world.scene import Obj, Scene, partial_caption, random_pool, rng_for, sample_scene, true_wordings
from blip.world.judge import correctness, judge

SCENES = [sample_scene(rng_for(7, 1, i), 3) for i in range(60)]


def test_every_true_wording_is_correct():
    pairs = [(scene, w) for scene in SCENES for w in sorted(true_wordings(scene))]
    result = correctness(pairs)
    assert result["correct"] == 1.0 and result["name_an_object"] == 1.0
    assert all(c["true"] in (1.0, None) for c in result["claims"].values())
    assert all(result["claims"][a]["made"] > 0 for a in ("shape", "colour", "size", "position", "relation",
                                                         "background", "count"))


def test_partly_wrong_and_mismatched_captions_are_not():
    rng = np.random.default_rng(3)
    partial = [(scene, partial_caption(scene, rng)[0]) for scene in SCENES]
    other = [(scene, str(rng.choice(random_pool(SCENES[(i + 1) % len(SCENES)], rng)))) for i, scene in enumerate(SCENES)]
    assert correctness(partial)["correct"] == 0.0
    assert correctness(other)["correct"] < 0.1


def test_each_wrong_attribute_is_named():
    scene = Scene((Obj("circle", "red", "small", (0, 0)), Obj("square", "blue", "large", (1, 1))), "striped", "beige")
    assert judge(scene, "a small red circle in the top left corner on a striped beige background") == {
        "shape": [True], "colour": [True], "size": [True], "position": [True], "relation": [], "background": [True],
        "count": []}
    claims = judge(scene, "A large green circle to the right of a blue square, on a white background.")
    assert claims["shape"] == [True, True] and claims["colour"] == [False, True] and claims["size"] == [False]
    assert claims["relation"] == [False] and claims["background"] == [False]
    assert judge(scene, "a red circle to the left of a blue square")["relation"] == [True]  # ties: horizontal
    assert judge(scene, "two shapes, a red circle and a blue square")["count"] == [True]
    assert correctness([(scene, "img_4821 jpg")]) == {
        "captions": 1, "correct": 0.0, "name_an_object": 0.0,
        "claims": {a: {"made": 0, "true": None} for a in judge(scene, "")}}
