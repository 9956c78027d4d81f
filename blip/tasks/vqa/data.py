"""VQA datasets: VQA v2's JSON and the BLIP release's vqa_*.json, as shards (the built-in world writes the same).

Every form becomes our shard layout with one sample per image (the image stored once, however many
questions it has); its .json holds the questions:

    {"questions": [{"question_id", "question", "answers": [...], "answer_type", "question_type", "source"}]}

`answers` are the annotators' raw answers (10 in VQA v2; one in Visual Genome; none in a test split).
The question files are read whole (VQA v2's largest, the train annotations, is some 350 MB as JSON); the
images are streamed one at a time.
Training expands a sample into one item per question (`per_question`), and weighs each distinct answer
as the release does (`answer_weights`).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator


from blip.config import IngestConfig
from blip.data import storage
from blip.data.ingest import Tally
from blip.data.karpathy import image_at
from blip.data.shards import DatasetWriter

VG_WEIGHT = 0.2  # the release's weight of a Visual Genome answer (one annotator)


class VQAFormatError(ValueError):
    """A file that is none of the VQA forms read here."""


def answer_weights(answers: list[str], source: str = "vqa") -> tuple[list[str], list[float]]:
    """Distinct answers and their weights: the share of annotators who gave each (VQA), 0.2 each (VG)."""
    if source == "vg":
        return list(answers), [VG_WEIGHT] * len(answers)
    counts = Counter(answers)
    return list(counts), [c / len(answers) for c in counts.values()]


def _load(path: str) -> object:
    try:
        return json.loads(storage.read_bytes(path))
    except (OSError, ValueError) as e:
        raise VQAFormatError(f"{path}: not readable JSON ({e})") from e


def read_vqa_files(files: list[str]) -> Iterator[dict]:
    """Question records from VQA v2 (a questions file, with its annotations file when the split has them) or
    from the release's vqa_*.json lists; each record: image (path under the image root) + question fields."""
    loaded = {f: _load(f) for f in files}
    annotations = {}
    for f, d in loaded.items():
        if isinstance(d, dict) and "annotations" in d:
            annotations.update({a["question_id"]: a for a in d["annotations"]})
    for f, d in loaded.items():
        if isinstance(d, list):
            yield from (_release_record(r, f) for r in d)
        elif isinstance(d, dict) and "questions" in d:
            subtype = d.get("data_subtype")
            if not subtype:
                raise VQAFormatError(f"{f}: a VQA v2 questions file names its images' folder in 'data_subtype' "
                                     "(e.g. train2014); this one has none")
            for q in d["questions"]:
                yield _v2_record(q, annotations, subtype, f)
        elif not (isinstance(d, dict) and "annotations" in d):
            raise VQAFormatError(f"{f}: neither a VQA v2 questions/annotations file nor a release vqa_*.json list")


def _v2_record(q: dict, annotations: dict, subtype: str, path: str) -> dict:
    try:
        ann = annotations.get(q["question_id"])
        return {"image": f"{subtype}/COCO_{subtype}_{int(q['image_id']):012d}.jpg", "question_id": q["question_id"],
                "question": q["question"], "answers": [a["answer"] for a in ann["answers"]] if ann else [],
                "answer_type": ann.get("answer_type") if ann else None,
                "question_type": ann.get("question_type") if ann else None, "source": "vqa"}
    except (KeyError, TypeError, ValueError) as e:
        raise VQAFormatError(f"{path}: a VQA v2 question (or its annotation) without a usable {e}: "
                             f"{str(q)[:200]}") from None


def _release_record(r: dict, path: str) -> dict:
    try:
        answers = r.get("answer", [])
        return {"image": r["image"], "question_id": r["question_id"], "question": r["question"],
                "answers": [answers] if isinstance(answers, str) else list(answers),
                "answer_type": None, "question_type": None, "source": r.get("dataset", "vqa")}
    except KeyError as e:
        raise VQAFormatError(f"{path}: a release VQA entry without {e.args[0]!r}: {str(r)[:200]}") from None


def ingest_vqa(files: list[str], image_root: str, out_dir: str | Path, cfg: IngestConfig, shard_size: int) -> dict:
    """Shards + manifest of the files' questions, grouped by image; unusable images are skipped and counted."""
    by_image: dict[str, list[dict]] = defaultdict(list)
    for record in read_vqa_files(files):
        by_image[record.pop("image")].append(record)
    tally, writer = Tally(), DatasetWriter(out_dir, shard_size)
    try:
        for i, (name, questions) in enumerate(sorted(by_image.items())):
            tally.seen += len(questions)
            img = image_at(image_root, name, cfg, tally, samples=len(questions))
            if img is not None:
                writer.write(f"{i:09d}", img.jpeg, questions[0]["question"], {"image": name, "questions": questions})
        tally.check(cfg, f"VQA ingest of {', '.join(files)}")
        return writer.finish({"kind": "vqa", "questions": tally.seen - sum(tally.skipped.values()), **tally.fields()})
    except BaseException:
        writer.abort()
        raise


def per_question(samples: Iterator[dict]) -> Iterator[dict]:
    """One raw sample per question of each image sample (the image bytes shared): text = the question,
    json = its record. A webdataset pipeline stage."""
    for sample in samples:
        meta = json.loads(sample["json"])
        for q in meta["questions"]:
            yield {**sample, "__key__": f"{sample['__key__']}-{q['question_id']}", "txt": q["question"].encode(),
                   "json": json.dumps(q).encode()}


def answer_counts(dataset_dirs: list[str]) -> tuple[Counter, dict[str, Counter]]:
    """How often each answer was given to the training questions, overall and per question type (answers
    lower-cased, spaces collapsed), in one pass: the answer list and the blind prior both come from it."""
    from blip.data.finished import iter_samples

    overall: Counter = Counter()
    by_type: dict[str, Counter] = defaultdict(Counter)
    for d in dataset_dirs:
        for sample in iter_samples(d):
            for q in sample["json"]["questions"]:
                answers = [" ".join(a.lower().split()) for a in q["answers"]]
                overall.update(answers)
                by_type[q.get("question_type") or ""].update(answers)
    return overall, by_type


def answer_list(overall: Counter, size: int) -> list[str]:
    """The `size` most frequent training answers (the release's list for VQA v2 holds 3,128), ties by first
    appearance: the candidates `rank` answers from."""
    return [a for a, _ in overall.most_common(size) if a]


def question_count(dataset_dirs: list[str]) -> int:
    """Questions in VQA datasets (their manifests count them)."""
    from blip.data.shards import read_manifest

    counts = [read_manifest(d).get("questions") for d in dataset_dirs]
    missing = [d for d, c in zip(dataset_dirs, counts) if c is None]
    if missing:
        raise VQAFormatError(f"{', '.join(missing)}: not a VQA dataset (its manifest counts no questions); "
                             "build one with `blip downstream-data vqa`")
    return sum(counts)


def answer_batch(tokenizer, batch, max_len: int, device) -> tuple:
    """A training batch's answers for the model: (ids, mask, weights, answers per question), in question order."""
    import torch

    from blip.tokenizer import tokenize

    texts, weights, counts = [], [], []
    for key, q in zip(batch.keys, batch.meta):
        if not q.get("answers"):
            raise VQAFormatError(f"question {key} has no answers: VQA trains on annotated questions only "
                                 "(a test split's questions have none)")
        distinct, w = answer_weights(q["answers"], q.get("source", "vqa"))
        texts += distinct
        weights += w
        counts.append(len(distinct))
    ids, mask = tokenize(tokenizer, texts, max_len)
    return (ids.to(device), mask.to(device), torch.tensor(weights, device=device),
            torch.tensor(counts, device=device))
