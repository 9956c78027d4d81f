"""Visual dialog sets as shards from VisDial v1.0's JSON (with its dense annotations); the built-in world writes
the same.

One sample per image (its dialog); the .txt is the caption, and the .json:

    {"image_id", "caption", "rounds": [{"question", "answer", "options": [100 answers], "gt_index"}],
     "dense": {"round": r, "relevance": [100]}}                  # dense: where annotated (VisDial val)

A test split's rounds may lack the answer and the options (VisDial test: only the last round is ranked);
rounds without options are history only. Training and scoring expand a dialog into one item per ranked round
(`per_round`). VisDial's JSON is read whole (its train file is some 200 MB); the images are streamed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator


from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.karpathy import image_at
from blip.data.shards import DatasetWriter

OPTIONS = 100      # candidate answers per round, as VisDial
_IMAGE_ID = re.compile(r"(\d+)\.(jpe?g|png)$", re.IGNORECASE)


class DialogFormatError(ValueError):
    """A file that is not VisDial's form."""


def dialog_text(answer: str, question: str, history: list[tuple[str, str]]) -> str:
    """What the dialog encoder reads after [ENC]: the candidate answer, the question, then the history from the
    latest round back, so that cutting a long text to its token budget drops the oldest rounds first."""
    past = " [SEP] ".join(f"{q} {a}" for q, a in reversed(history))
    return f"{answer} [SEP] {question}" + (f" [SEP] {past}" if past else "")


def per_round(samples: Iterator[dict]) -> Iterator[dict]:
    """One raw sample per ranked round of each dialog (the image shared): json = the round with its history and
    the caption. A webdataset pipeline stage."""
    for sample in samples:
        meta = json.loads(sample["json"])
        for item in ranked_rounds(meta):
            yield {**sample, "__key__": f"{sample['__key__']}-{item['round']}", "json": json.dumps(item).encode()}


def ranked_rounds(meta: dict) -> Iterator[dict]:
    """A dialog's rounds that have candidates, each with its question, options, gt_index, caption and history."""
    history: list[tuple[str, str]] = []
    for r, rnd in enumerate(meta["rounds"]):
        if rnd.get("options"):
            yield {"image_id": meta["image_id"], "round": r, "caption": meta["caption"], "question": rnd["question"],
                   "options": rnd["options"], "gt_index": rnd.get("gt_index"), "history": list(history),
                   "relevance": meta["dense"]["relevance"] if meta.get("dense", {}).get("round") == r else None}
        if rnd.get("answer") is not None:
            history.append((rnd["question"], rnd["answer"]))


def question_key(question: str) -> str:
    """A question's first two words ("what colour", "how many"): questions alike expect answers alike."""
    return " ".join(question.lower().split()[:2])


def training_pairs(rounds: list[dict], negatives: int = 1, hard: int = 0) -> tuple[list[str], list[int]]:
    """Dialog texts and ITM labels of a batch's training rounds: each round's right answer (1), then `negatives`
    wrong ones (0). Up to `hard` of them are hard: the right answers of the batch's other rounds whose questions
    start alike (a colour for a colour question, so that only the image and the caption tell them apart); the
    rest are candidates drawn at random. Draws use torch's generator, which the engine seeds per step."""
    import torch

    alike: dict[str, list[str]] = {}
    for r in rounds:
        if r["gt_index"] is None:
            raise DialogFormatError(f"dialog {r['image_id']} round {r['round']}: no right answer; visual dialog "
                                    "trains on rounds with gt_index (VisDial's test split has none)")
        alike.setdefault(question_key(r["question"]), []).append(r["options"][r["gt_index"]])
    texts, labels = [], []
    for r in rounds:
        right = r["options"][r["gt_index"]]
        similar = list(dict.fromkeys(a for a in alike[question_key(r["question"])] if a != right))
        similar = [similar[i] for i in torch.randperm(len(similar)).tolist()][:min(hard, negatives)]
        wrong = [o for o in r["options"] if o != right and o not in similar]
        others = similar + [wrong[i] for i in torch.randperm(len(wrong))[:negatives - len(similar)].tolist()]
        texts += [dialog_text(a, r["question"], r["history"]) for a in [right, *others]]
        labels += [1] + [0] * len(others)
    return texts, labels


def round_count(dataset_dirs: list[str]) -> int:
    """Ranked rounds in dialog datasets (their manifests count them)."""
    from blip.data.shards import read_manifest

    counts = [read_manifest(d).get("rounds") for d in dataset_dirs]
    if None in counts:
        raise DialogFormatError(f"{', '.join(dataset_dirs)}: not a dialog dataset (its manifest counts no rounds); "
                                "build one with `blip downstream-data dialog`")
    return sum(counts)


# ---------------------------------------------------------------------------------------- VisDial v1.0

def image_index(root: str) -> dict[int, str]:
    """{image id: path under root} of the images below `root`, the id being a file name's trailing number
    (COCO_train2014_000000123456.jpg, VisualDialog_val2018_000000123456.jpg)."""
    index = {}
    for rel in storage.find(root):
        m = _IMAGE_ID.search(rel)
        if m:
            index.setdefault(int(m.group(1)), rel)
    return index


def read_visdial(files: list[str], dense: str | None = None) -> Iterator[dict]:
    """Dialog records (the .json above) from VisDial v1.0 files, with the dense annotations' relevance where given."""
    relevance = {}
    if dense:
        for d in _load(dense):
            try:
                relevance[int(d["image_id"])] = (int(d["round_id"]) - 1, d.get("gt_relevance", d.get("relevance")))
            except (KeyError, TypeError, ValueError) as e:
                raise DialogFormatError(f"{dense}: a dense annotation without a usable {e}: {str(d)[:200]}") from None
    for f in files:
        d = _load(f)
        try:
            data = d["data"]
            questions, answers = data["questions"], data["answers"]
            for dialog in data["dialogs"]:
                rounds = [{"question": questions[r["question"]] + "?",
                           "answer": answers[r["answer"]] if "answer" in r else None,
                           "options": [answers[i] for i in r["answer_options"]] if "answer_options" in r else None,
                           "gt_index": r.get("gt_index")} for r in dialog["dialog"]]
                record = {"image_id": int(dialog["image_id"]), "caption": dialog["caption"], "rounds": rounds}
                if record["image_id"] in relevance:
                    r, rel = relevance[record["image_id"]]
                    record["dense"] = {"round": r, "relevance": rel}
                yield record
        except (KeyError, TypeError, IndexError) as e:
            raise DialogFormatError(f"{f}: not VisDial v1.0's form (data: questions, answers, dialogs with "
                                    f"image_id, caption, dialog rounds); missing or bad: {e}") from None


def _load(path: str):
    try:
        return json.loads(storage.read_bytes(path))
    except (OSError, ValueError) as e:
        raise DialogFormatError(f"{path}: not readable JSON ({e})") from e


def ingest_visdial(files: list[str], image_root: str, out_dir: str | Path, cfg: IngestConfig, shard_size: int,
                   dense: str | None = None) -> dict:
    """Shards + manifest of VisDial dialogs; a dialog whose image is missing or unusable is skipped and counted."""
    index = image_index(image_root)
    tally, writer, rounds = Tally(), DatasetWriter(out_dir, shard_size), 0
    try:
        for i, record in enumerate(read_visdial(files, dense)):
            ranked = sum(1 for r in record["rounds"] if r["options"])
            tally.seen += 1
            rel = index.get(record["image_id"])
            if rel is None:
                tally.skip(f"image {record['image_id']}", "missing_file")
                continue
            img = image_at(image_root, rel, cfg, tally)
            if img is not None:
                writer.write(f"{i:09d}", img.jpeg, record["caption"], record)
                rounds += ranked
        tally.check(cfg, f"VisDial ingest of {', '.join(files)}")
        return writer.finish({"kind": "dialog", "rounds": rounds, **tally.fields()})
    except BaseException:
        writer.abort()
        raise
