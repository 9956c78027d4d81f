"""The world's dialogs: questions about a fresh scene in random order, each with 100 candidate answers in
several phrasings, as VisDial; the test split carries dense relevance on one round."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blip.data.shards import DatasetWriter
from blip.tasks.dialog.data import OPTIONS
from blip.world.scene import (BACKGROUNDS, COLOURS, COLS, ROWS, SHAPES, encode_jpeg, human_captions, render,
                              rng_for, sample_scene)
from blip.world.vqa import world_questions

DIALOG_STREAM = 6  # the world's generator stream for dialogs (1: human, 2: web, 3: VQA, 4: NLVR, 5: video)

PHRASINGS = ("{a}", "i think {a}", "{a} i believe", "looks like {a}")  # ways to say one answer


def _answer_pool() -> list[str]:
    """Every answer the world's questions have (all types), each in every phrasing: the candidates' source."""
    canonical = [*COLOURS, *SHAPES, "0", "1", "2", "3", "yes", "no", *BACKGROUNDS, *ROWS, *COLS]
    return [p.format(a=a) for a in dict.fromkeys(canonical) for p in PHRASINGS]


def meaning(option: str) -> str:
    """The answer an option says, without its phrasing."""
    for p in PHRASINGS[1:]:
        head, tail = p.split("{a}")
        if option.startswith(head) and option.endswith(tail):
            return option[len(head):len(option) - len(tail)]
    return option


def world_dialog(scene, caption: str, rng: np.random.Generator, rounds: int, dense: bool) -> dict:
    """A dialog about a scene: `rounds` questions in random order, each with 100 candidates (the right answer in
    one phrasing, 99 others from every answer's phrasings); `dense`: one round's relevance (1 for every phrasing
    of the right answer)."""
    pool = _answer_pool()
    qs = world_questions(scene, rng, rounds)
    out = []
    for i in rng.permutation(len(qs)):
        q = qs[i]
        answer = str(rng.choice(PHRASINGS)).format(a=q["answer"])
        others = [pool[j] for j in rng.permutation(len(pool)) if pool[j] != answer][:OPTIONS - 1]
        gt = int(rng.integers(OPTIONS))
        out.append({"question": q["question"] + "?", "answer": answer, "options": others[:gt] + [answer] + others[gt:],
                    "gt_index": gt, "answer_type": q["question_type"]})
    record = {"caption": caption, "rounds": out}
    if dense:
        r = int(rng.integers(len(out)))
        truth = meaning(out[r]["answer"])
        record["dense"] = {"round": r, "relevance": [float(meaning(o) == truth) for o in out[r]["options"]]}
    return record


def write_world_dialogs(world_cfg, seed: int, splits: dict[str, int], out_dir: str | Path, shard_size: int) -> dict:
    """The world's dialog sets from fresh scenes (a caption each, as a human would write it); the test split
    carries dense relevance on one round per dialog, as VisDial's val."""
    stats, index = {}, 0
    for split, n in splits.items():
        writer, rounds = DatasetWriter(Path(out_dir) / split, shard_size), 0
        for _ in range(n):
            rng = rng_for(seed, DIALOG_STREAM, index)
            scene = sample_scene(rng, world_cfg.max_objects)
            jpeg = encode_jpeg(render(scene, world_cfg.image_size, rng), world_cfg.jpeg_quality)
            caption = str(rng.choice(human_captions(scene, rng)))
            record = {"image_id": index, **world_dialog(scene, caption, rng, world_cfg.dialog.rounds, split == "test"),
                      "scene": scene.to_json()}
            writer.write(f"{index:09d}", jpeg, caption, record)
            rounds += len(record["rounds"])
            index += 1
        stats[split] = writer.finish({"kind": "dialog", "rounds": rounds})["rounds"]
    return stats
