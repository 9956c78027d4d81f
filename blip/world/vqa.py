"""The world's VQA sets: questions about fresh scenes with their true answers, written as VQA datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from blip.data.shards import DatasetWriter
from blip.world.scene import COLOURS, COLS, ROWS, SHAPES, encode_jpeg, render, rng_for, sample_scene

VQA_STREAM = 3  # the world's generator stream for VQA scenes (1: human set, 2: web)


def world_questions(scene, rng: np.random.Generator, k: int) -> list[dict]:
    """Up to `k` questions about a scene, with their true answers, one per template drawn without repeat:
    counts, colours, shapes, sizes, positions, relations and yes/no questions."""
    objs = scene.objects
    by_shape, by_colour = Counter(o.shape for o in objs), Counter(o.colour for o in objs)
    pool: list[tuple[str, str, str, str]] = [("how many objects are there", str(len(objs)), "number", "count")]
    colour = str(rng.choice(list(COLOURS)))
    pool.append((f"how many {colour} objects are there", str(by_colour[colour]), "number", "count colour"))
    pool.append(("what colour is the background", scene.background, "other", "background"))
    o = objs[int(rng.integers(len(objs)))]
    if by_shape[o.shape] == 1:
        pool.append((f"what colour is the {o.shape}", o.colour, "other", "colour"))
    if by_colour[o.colour] == 1:
        pool.append((f"what shape is the {o.colour} object", o.shape, "other", "shape"))
        pool.append((f"is the {o.colour} {o.shape} large", "yes" if o.size == "large" else "no", "yes/no", "size"))
        row, col = ROWS[o.cell[0]], COLS[o.cell[1]]
        pool.append((f"which row is the {o.colour} {o.shape} in", row, "other", "row"))
        pool.append((f"which column is the {o.colour} {o.shape} in", col, "other", "column"))
    # yes/no about presence: half the time a true object, half an object the scene lacks
    present = bool(rng.integers(2))
    asked = (o.colour, o.shape) if present else (str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES)))
    truth = any((x.colour, x.shape) == asked for x in objs)
    pool.append((f"is there a {asked[0]} {asked[1]}", "yes" if truth else "no", "yes/no", "exists"))
    if len(objs) > 1 and by_colour[objs[0].colour] == 1 and by_colour[objs[1].colour] == 1:
        a, b = objs[0], objs[1]
        pool.append((f"is the {a.colour} {a.shape} left of the {b.colour} {b.shape}",
                     "yes" if a.cell[1] < b.cell[1] else "no", "yes/no", "left of"))
    picks = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
    return [{"question": pool[i][0], "answer": pool[i][1], "answer_type": pool[i][2], "question_type": pool[i][3]}
            for i in sorted(picks)]


def write_world_vqa(world_cfg, seed: int, splits: dict[str, int], questions_per_image: int, out_dir: str | Path,
                    shard_size: int) -> dict:
    """The built-in world's VQA sets (one folder per split) from fresh scenes; ten annotators per question,
    of whom a seeded few write a count as a word ("two"), which the VQA clean-up maps back to the digit."""
    words = {"0": "zero", "1": "one", "2": "two", "3": "three"}
    stats, index = {}, 0
    for split, n in splits.items():
        writer = DatasetWriter(Path(out_dir) / split, shard_size)
        count = 0
        for _ in range(n):
            rng = rng_for(seed, VQA_STREAM, index)
            scene = sample_scene(rng, world_cfg.max_objects)
            jpeg = encode_jpeg(render(scene, world_cfg.image_size, rng), world_cfg.jpeg_quality)
            questions = []
            for j, q in enumerate(world_questions(scene, rng, questions_per_image)):
                answers = [words[q["answer"]] if q["answer"] in words and rng.random() < 0.2 else q["answer"]
                           for _ in range(10)]
                questions.append({"question_id": index * 100 + j, "question": q["question"], "answers": answers,
                                  "answer_type": q["answer_type"], "question_type": q["question_type"],
                                  "source": "vqa"})
            writer.write(f"{index:09d}", jpeg, questions[0]["question"],
                         {"image": f"world://vqa/{index}", "questions": questions, "scene": scene.to_json()})
            count += len(questions)
            index += 1
        stats[split] = writer.finish({"kind": "vqa", "questions": count})["questions"]
    return stats
