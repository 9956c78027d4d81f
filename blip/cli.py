"""`blip <command>`: the pipeline's stages and the user commands, each a thin layer over the library."""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

from blip.config import load_params
from blip.downstream import TASKS


def _write_metrics(path: str | None, metrics: dict) -> None:
    if path:
        from blip.data.shards import atomic_write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(path), metrics)


def cmd_prepare(args: argparse.Namespace) -> int:
    from blip.data.prepare import prepare

    params = load_params(args.params)
    start = time.time()
    metrics = prepare(params, args.out)
    metrics["seconds"] = round(time.time() - start, 1)
    _write_metrics(args.metrics, metrics)
    web, human = metrics["web"], metrics["human"]
    print(f"prepare: human train/val/test {human['train']['samples']}/{human['val']['samples']}/"
          f"{human['test']['samples']} images, web {web['samples']} pairs in {web['shards']} shards, registered "
          f"where they are, in {metrics['seconds']} s -> {args.out}")
    return 0


def cmd_world(args: argparse.Namespace) -> int:
    from blip.data.world import generate_world

    params = load_params(args.params)
    stats = generate_world(params.world, params.seed if args.seed is None else args.seed, args.out)
    print(json.dumps(stats, indent=1))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from blip.data.karpathy import ingest_karpathy
    from blip.data.web import register_web

    params = load_params(args.params)
    if args.kind == "karpathy":
        manifests = ingest_karpathy(args.json, args.images, args.out, params.ingest, dataset=args.name,
                                    default_split=args.split)
        for split, m in manifests.items():
            print(f"{split}: {m['samples']} images, {m['texts']} captions, skipped {m['skipped']}")
    else:
        m = register_web(args.shards, args.out)
        print(f"registered {len(m['shards'])} shards, {m['samples']} samples, {m['bytes']} bytes, in place "
              f"(counted from _stats.json: {m['counted_by']['stats']}, by reading: {m['counted_by']['scan']}) "
              f"-> {args.out}/manifest.json")
    return 0


def verify(dataset_dirs: list[str], decode_sample: int, seed: int) -> dict:
    """Structural checks of finished datasets: manifest, checksums, counts, a sample of decodable images."""
    import random

    from PIL import Image

    from blip.data.shards import FORMAT, iter_samples, read_manifest, verify_dataset
    from blip.selection.dataset import SELECTION_FORMAT

    report = {}
    for d in dataset_dirs:
        problems = verify_dataset(d)
        manifest = read_manifest(d, (FORMAT, SELECTION_FORMAT))
        # reservoir-free sampling: pick sample indices up front, decode only those
        picks = set(random.Random(seed).sample(range(manifest["samples"]), min(decode_sample, manifest["samples"])))
        for i, sample in enumerate(iter_samples(d)):
            if i in picks:
                try:
                    Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
                except Exception as e:  # any decoder failure is a finding, not a crash
                    problems.append(f"{d}:{sample['__key__']}: image does not decode ({e})")
            if not sample["txt"].strip():
                problems.append(f"{d}:{sample['__key__']}: empty caption")
            if "source" not in sample["json"]:
                problems.append(f"{d}:{sample['__key__']}: metadata has no 'source'")
        report[d] = {"samples": manifest["samples"], "decoded": len(picks), "problems": problems[:50],
                     "problem_count": len(problems)}
    return report


def cmd_verify(args: argparse.Namespace) -> int:
    report = verify(args.datasets, args.decode_sample, args.seed)
    ok = all(r["problem_count"] == 0 for r in report.values())
    _write_metrics(args.metrics, {"ok": ok, "datasets": report})
    for d, r in report.items():
        print(f"{d}: {r['samples']} samples, {r['decoded']} decoded, {r['problem_count']} problems")
        for p in r["problems"][:10]:
            print(f"  - {p}")
    return 0 if ok else 1


DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: this rank's GPU when CUDA is present, else the CPU)"

STAGE_DEFAULTS = {  # stage -> (task, preset section, datasets, init model, output model)
    "pretrain": ("pretrain", "pretrain", ["data/human/train", "data/web"], None, "models/pretrain"),
    "finetune_captioner": ("captioner", "finetune_captioner", ["data/human/train"], "models/pretrain",
                           "models/captioner"),
    "finetune_filter": ("filter", "finetune_filter", ["data/human/train"], "models/pretrain", "models/filter"),
}


def _relaunch(procs: int) -> int | None:
    """Re-run this command under the DeepSpeed launcher with `procs` processes (unless already in one)."""
    import os
    import subprocess

    if procs <= 1 or "WORLD_SIZE" in os.environ:
        return None
    from blip.train.engine import free_port

    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(procs), "--no_local_rank",
           "--master_port", str(free_port()), "--module", "blip.cli", *sys.argv[1:]]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


def cmd_train(args: argparse.Namespace) -> int:
    from blip.train.engine import TrainJob, train

    params = load_params(args.params)
    relaunched = _relaunch(args.procs if args.procs is not None else params.train.procs)
    if relaunched is not None:
        return relaunched
    task, section, data, init, out = STAGE_DEFAULTS[args.stage]
    name = args.name or args.stage
    if args.models == "shared" and args.stage == "finetune_captioner":
        from blip.train.shared import adopt_shared_captioner

        adopt_shared_captioner(Path(STAGE_DEFAULTS["finetune_filter"][4]), Path(args.out or out),
                               Path("metrics/finetune_filter.json"), Path(args.metrics or f"metrics/{name}.json"),
                               Path("plots/finetune_filter_loss.csv"), Path(args.plot or f"plots/{name}_loss.csv"))
        print(f"[{name}] capfilt.models is shared: the captioner is the shared captioner-filter, not trained apart")
        return 0
    if args.models == "shared" and args.stage == "finetune_filter":
        task = "shared"
    job = TrainJob(
        name=name, task=task, stage=getattr(params.active, section), params=params,
        data=args.data or data, out_dir=Path(args.out or (f"models/{name}" if args.name else out)),
        ckpt_dir=Path(args.ckpt_dir or f"checkpoints/{name}"),
        init_from=args.init_from if args.init_from is not None else init,
        metrics_path=Path(args.metrics or f"metrics/{name}.json"),
        plot_path=Path(args.plot or f"plots/{name}_loss.csv"), max_steps=args.max_steps)
    train(job)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from blip.evaluate.model import evaluate_model
    from blip.tracking import Tracker, data_hashes, git_commit

    params = load_params(args.params)
    metrics, examples, reports = evaluate_model(args.model, args.data, params, args.k_test, args.limit, args.device)
    if not reports:  # rank 0 writes and tracks the result every rank holds
        return 0
    _write_metrics(args.metrics, metrics)
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, args.name or f"evaluate {args.model}")
    tracker.tags({"stage": "evaluate", "model": args.model, "git_commit": git_commit(), **data_hashes([args.data])})
    tracker.metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    tracker.dict_artifact({"metrics": metrics, "examples": examples[:200]}, "evaluation.json")
    tracker.end()
    shown = {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)}
    print(f"evaluate {args.model} on {args.data}: {shown}")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    from blip import gates
    from blip.tracking import Tracker, git_commit

    params = load_params(args.params)
    measure = gates.filter_gate if args.kind == "filter" else gates.captioner_gate
    result = measure(args.model, args.data, params, args.device)
    _write_metrics(args.metrics, result)
    tracker = Tracker(params.tracking.uri, params.tracking.experiment, f"gate_{args.kind}")
    tracker.tags({"stage": f"gate_{args.kind}", "model": args.model, "passed": result["passed"],
                  "git_commit": git_commit()})
    tracker.metrics({k: v for k, v in result.items() if isinstance(v, float) and not isinstance(v, bool)})
    tracker.dict_artifact(result, f"gate_{args.kind}.json")
    tracker.end()
    verdict = gates.explain(result)
    if not result["passed"] and params.gates.on_fail == "stop":
        print(verdict, file=sys.stderr)
        return 1
    print(verdict if result["passed"] else f"{verdict}\n  (gates.on_fail=warn: going on)")
    if args.passed:  # what later stages depend on: the model that passed, not the figures (see dvc.yaml)
        from blip.capfilt.scoring import model_id
        from blip.data import storage

        storage.write_bytes(args.passed, f"{model_id(args.model)}\n".encode())
    return 0


def cmd_capfilt(args: argparse.Namespace) -> int:
    from blip.capfilt.job import CapfiltJob, run_capfilt

    params = load_params(args.params)
    job = CapfiltJob(params, captioners=(args.captioner or ["models/captioner"]) + list(params.capfilt.captioners),
                     filters=(args.filter or ["models/filter"]) + list(params.capfilt.filters),
                     web=args.input or ["data/web"], output=args.output, round=args.round,
                     calibrate_on=args.calibrate_on, metrics=Path(args.metrics) if args.metrics else None,
                     name=args.name, device=args.device, tables=args.tables)
    run_capfilt(job)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from blip.selection.job import SelectJob, run_select

    job = SelectJob(load_params(args.params), scores=args.scores, human=args.human, output=args.output,
                    threshold=args.threshold, metrics=Path(args.metrics) if args.metrics else None,
                    report=Path(args.report) if args.report else None, name=args.name)
    run_select(job)
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    from blip.selection.dataset import materialize

    manifest = materialize(args.dataset, args.out, args.shard_size or load_params(args.params).ingest.shard_size)
    print(f"materialize: {manifest['samples']} samples in {len(manifest['shards'])} shards -> {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from blip.data import storage
    from blip.evaluate.compare import chain_of, compare, compare_table

    params = load_params(args.params)
    result = compare(Path(args.metrics_dir), params.downstream.tasks + [f"video_{k}" for k in params.downstream.video])
    _write_metrics(args.out, result)
    seeds = json.loads(Path(args.seeds).read_text()) if args.seeds and Path(args.seeds).is_file() else None
    table = compare_table(result, chain_of(params), seeds)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        storage.write_bytes(Path(args.table), table.encode())
    print(table)
    return 0


def cmd_rounds(args: argparse.Namespace) -> int:
    from blip.data import storage
    from blip.rounds import rounds_table, run_rounds

    params = load_params(args.params)
    out = Path(args.out)
    rows = run_rounds(params.rounds, out, args.params, continue_pretraining=bool(params.retrain.init_from))
    table = rounds_table(rows)
    out.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(out / "rounds.md", table.encode())
    _write_metrics(args.metrics, {"rounds": params.rounds, "per_round": rows})
    print(table)
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from blip.registry import register_round

    params = load_params(args.params)
    decisions = register_round(params, args.round or max(1, params.rounds), Path(args.rounds_dir), args.only,
                               args.metrics)
    for d in decisions:
        print(f"register: {d['name']} v{d['version']} -> @{d['alias']} ({d['reason']})")
    return 0


def _open_image(path: str):
    """An RGB image, upright by its EXIF; ValueError naming the file when it is not a usable image."""
    from blip.inference import decode_image

    try:
        return decode_image(path)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _open_images(paths: list[str]) -> tuple[list[str], list, list[str]]:
    """The usable images (their paths and pictures) and one line per file skipped, with its reason."""
    good, images, skipped = [], [], []
    for path in paths:
        try:
            images.append(_open_image(path))
            good.append(path)
        except ValueError as e:
            skipped.append(str(e))
    return good, images, skipped


def _add_heads(p: argparse.ArgumentParser) -> None:
    """Head counts for release weights of a width no released model has (checkpoints do not record them)."""
    p.add_argument("--vision-heads", type=int, default=None, help="ViT heads of a release .pth (default: by width)")
    p.add_argument("--text-heads", type=int, default=None, help="text heads of a release .pth (default: by width)")


def cmd_caption(args: argparse.Namespace) -> int:
    from blip.inference import load
    from blip.models.generate import GenerationSettings

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    settings = GenerationSettings(args.method, num_beams=args.beams, max_length=args.max_length,
                                  min_length=args.min_length, top_p=args.top_p, num_captions=args.num)
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    paths, images, skipped = _open_images(args.images)
    for line in skipped:
        print(f"blip caption: skipped {line}", file=sys.stderr)
    if not images:
        raise ValueError(f"none of the {len(args.images)} files is a usable image")
    for path, captions in zip(paths, blip.caption(images, settings)):
        for caption in captions:
            print(f"{path}\t{caption}")
    if skipped:
        print(f"blip caption: captioned {len(images)} of {len(args.images)} files, skipped {len(skipped)}",
              file=sys.stderr)
    return 1 if skipped else 0


def cmd_score(args: argparse.Namespace) -> int:
    from blip.inference import load

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    for row in blip.score(_open_image(args.image), args.texts, itm_token=args.itm_token):
        print(f"itm={row['itm']:.4f}\titc={row['itc']:.4f}\t{row['text']}")
    return 0


def cmd_downstream_data(args: argparse.Namespace) -> int:
    from blip.downstream import build_data

    params = load_params(args.params)
    start = time.time()
    metrics = build_data(args.task, params, args.out)
    metrics["seconds"] = round(time.time() - start, 1)
    _write_metrics(args.metrics, metrics)
    counts = metrics.get("questions") or metrics.get("pairs") or metrics.get("rounds")
    print(f"downstream-data {args.task}: {counts} ({metrics['source']}) in {metrics['seconds']} s -> {args.out}")
    return 0


def cmd_downstream(args: argparse.Namespace) -> int:
    from blip.downstream import run

    params = load_params(args.params)
    relaunched = _relaunch(args.procs if args.procs is not None else params.train.procs)
    if relaunched is not None:
        return relaunched
    sources = _sources(args.sources)
    data = args.data or f"data/{args.task}"
    result = run(args.task, params, sources, data, args.models or f"models/{args.task}", args.max_steps)
    import torch.distributed as dist

    if dist.get_rank() == 0:  # rank 0 scored the models
        _write_metrics(args.metrics or f"metrics/downstream/{args.task}.json", result)
        metric = {"vqa": "overall", "nlvr": "accuracy", "dialog": "mrr"}[args.task]
        print(f"downstream {args.task}: {metric} {({n: result[n][metric] for n in sources})}, chance {result['chance']}")
    return 0


def _sources(specs: list[str]) -> dict[str, str]:
    sources = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--from takes NAME=MODEL pairs (e.g. baseline=models/pretrain), got {spec!r}")
        sources[name] = path
    return sources


def cmd_video_data(args: argparse.Namespace) -> int:
    from blip.video.stage import build_video_data

    start = time.time()
    metrics = build_video_data(args.kind, load_params(args.params), args.out)
    metrics["seconds"] = round(time.time() - start, 1)
    _write_metrics(args.metrics, metrics)
    print(f"video-data {args.kind}: {metrics['clips']} clips ({metrics['source']}) in {metrics['seconds']} s "
          f"-> {args.out}")
    return 0


def cmd_video(args: argparse.Namespace) -> int:
    from blip.video.stage import run_video

    sources = _sources(args.sources)
    result = run_video(args.kind, load_params(args.params), sources, args.data or f"data/video_{args.kind}")
    _write_metrics(args.metrics or f"metrics/downstream/video_{args.kind}.json", result)
    metric = "vid_r1" if args.kind == "retrieval" else "accuracy"
    print(f"video {args.kind} (zero-shot): {metric} "
          f"{ {n: result[n][metric] for n in sources} }, "
          f"chance {result['chance']}")
    return 0


def cmd_verify_pair(args: argparse.Namespace) -> int:
    from blip.inference import load

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    first, second = _open_image(args.first), _open_image(args.second)
    for statement, (verdict, p) in zip(args.statements, blip.verify_pair([first] * len(args.statements),
                                                                         [second] * len(args.statements),
                                                                         args.statements)):
        print(f"{statement}\t{'true' if verdict else 'false'}\t{p:.4f}")
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from blip.inference import load

    blip = load(args.model, device=args.device, vision_heads=args.vision_heads, text_heads=args.text_heads)
    image = _open_image(args.image)
    for question, reply in zip(args.questions, blip.ask([image] * len(args.questions), args.questions, args.method)):
        print(f"{question}\t{reply}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blip", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="stage: build the human and web datasets (built-in world by default)")
    p.add_argument("--out", default="data")
    p.add_argument("--metrics", default="metrics/prepare.json")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("world", help="write the built-in world's raw human set and web shards")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_world)

    p = sub.add_parser("ingest", help="ingest your own data into shards + manifest")
    kinds = p.add_subparsers(dest="kind", required=True)
    k = kinds.add_parser("karpathy", help="COCO / Flickr30k Karpathy JSON + image root")
    k.add_argument("--json", required=True)
    k.add_argument("--images", required=True, help="folder the JSON's image paths are relative to")
    k.add_argument("--out", required=True)
    k.add_argument("--name", default="coco")
    k.add_argument("--split", default=None, help="split for rows that name none (BLIP's per-split files)")
    w = kinds.add_parser("web", help="img2dataset / LAION webdataset shards, registered where they are (a manifest "
                                     "over them; nothing is copied)")
    w.add_argument("--shards", required=True, nargs="+", help="folder, glob or list of .tar files (local or URL)")
    w.add_argument("--out", required=True, help="folder (or URL) for the manifest")
    p.set_defaults(func=cmd_ingest)

    for stage in STAGE_DEFAULTS:
        p = sub.add_parser(stage, help=f"stage: train ({STAGE_DEFAULTS[stage][0]}) with DeepSpeed")
        p.add_argument("--data", nargs="+", default=None, help="dataset folders (default: %(default)s)")
        p.add_argument("--init-from", default=None, help="model to start from ('' = from scratch)")
        p.add_argument("--out", default=None, help="final model folder")
        p.add_argument("--name", default=None, help="run name (e.g. retrain); sets default paths")
        p.add_argument("--ckpt-dir", default=None)
        p.add_argument("--metrics", default=None)
        p.add_argument("--plot", default=None)
        p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
        p.add_argument("--procs", type=int, default=None, help="processes (default: train.procs)")
        if stage != "pretrain":
            p.add_argument("--models", choices=["decoupled", "shared"], default="decoupled",
                           help="CapFilt's models (params capfilt.models): shared = one captioner-filter, trained "
                                "by finetune_filter and adopted by finetune_captioner (Table 4's ablation)")
        p.set_defaults(func=cmd_train, stage=stage, models="decoupled")

    p = sub.add_parser("evaluate", help="caption metrics / retrieval recalls of a model on a test split")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/human/test", help="a human split (zero-shot: another dataset's)")
    p.add_argument("--metrics", default=None)
    p.add_argument("--name", default=None, help="MLflow run name")
    p.add_argument("--k-test", type=int, default=None, help="ITC candidates re-ranked by ITM")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N images only")
    p.add_argument("--device", default=None, help=f"{DEVICE_HELP} (default: params inference.device)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("capfilt", help="stage / user command: caption web images and score every text (CapFilt)")
    p.add_argument("--captioner", nargs="+", default=None, help="captioner model(s) (default: models/captioner)")
    p.add_argument("--filter", nargs="+", default=None, help="filter model(s) (default: models/filter)")
    p.add_argument("--input", nargs="+", default=None, help="registered web set(s) (default: data/web)")
    p.add_argument("--output", default="data/scores", help="folder or URL for the scores manifest")
    p.add_argument("--tables", default=None, help="folder or URL the score tables go to (default: params "
                                                 "capfilt.tables); every Ray worker must be able to write it")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--calibrate-on", default="data/human/val", help="human split whose pairs select calibrates on")
    p.add_argument("--metrics", default="metrics/capfilt.json")
    p.add_argument("--name", default="capfilt", help="MLflow run name")
    p.add_argument("--device", default=None, help=f"{DEVICE_HELP} (default: params inference.device)")
    p.set_defaults(func=cmd_capfilt)

    p = sub.add_parser("select", help="stage / user command: choose the kept texts from capfilt's score tables")
    p.add_argument("--scores", default="data/scores", help="capfilt's output folder")
    p.add_argument("--human", nargs="*", default=["data/human/train"],
                   help="human-annotated dataset(s) taken whole (default: %(default)s)")
    p.add_argument("--output", default="data/bootstrapped")
    p.add_argument("--threshold", type=float, default=None, help="a fixed score threshold (default: params select)")
    p.add_argument("--metrics", default="metrics/select.json")
    p.add_argument("--report", default="reports/capfilt", help="folder for the examples sheet")
    p.add_argument("--name", default="select", help="MLflow run name")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("materialize", help="write a selected (bootstrapped) dataset as standalone shards")
    p.add_argument("dataset")
    p.add_argument("out")
    p.add_argument("--shard-size", type=int, default=None, help="samples per shard (default: ingest.shard_size)")
    p.set_defaults(func=cmd_materialize)

    p = sub.add_parser("compare", help="baseline vs bootstrapped evaluation, as JSON and a markdown table")
    p.add_argument("--metrics-dir", default="metrics")
    p.add_argument("--out", default="metrics/compare.json")
    p.add_argument("--table", default=None)
    p.add_argument("--seeds", default=None, help="Table 12 over seeds (bench/table12.py's result): shown when it "
                                                 "ran on this chain's data, world and preset")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("rounds", help="stage: bootstrapping rounds 2..R (params `rounds`) after the main chain's round 1")
    p.add_argument("--out", default="rounds", help="folder for the later rounds' data, models and reports")
    p.add_argument("--metrics", default="metrics/rounds.json")
    p.set_defaults(func=cmd_rounds)

    p = sub.add_parser("gate", help="stage: judge a fine-tuned filter or captioner on human val pairs (params `gates`)")
    p.add_argument("kind", choices=["filter", "captioner"])
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/human/val")
    p.add_argument("--metrics", default=None)
    p.add_argument("--passed", default=None, help="written when the model passes (or warns): the model's id only")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("register", help="stage: register captioner, filter and retrained model; promote by alias")
    p.add_argument("--metrics", default="metrics/register.json")
    p.add_argument("--rounds-dir", default="rounds", help="the rounds stage's folder (params `rounds` > 1)")
    p.add_argument("--round", type=int, default=None, help="the round whose models to register (default: the last)")
    p.add_argument("--only", nargs="+", choices=["captioner", "filter", "pretrained"], default=None,
                   help="register only these (e.g. a round's captioner and filter before its retraining)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("caption", help="caption images with a model (ours, release .pth, HF Blip folder)")
    p.add_argument("images", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--method", choices=["beam", "nucleus", "greedy"], default="beam")
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--num", type=int, default=1, help="captions per image")
    p.add_argument("--max-length", type=int, default=20)
    p.add_argument("--min-length", type=int, default=5)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=None, help="seed for nucleus sampling")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_heads(p)
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("score", help="ITM probability and ITC similarity of texts with an image")
    p.add_argument("image")
    p.add_argument("texts", nargs="+")
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--itm-token", choices=["enc", "cls"], default="enc",
                   help="ITM's first token: enc as the release's retrieval training, cls as its BLIP_ITM demo")
    _add_heads(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("downstream-data", help="stage: a transfer task's data as shards (built-in world, or params "
                                               "data.<task>'s files)")
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=cmd_downstream_data)

    p = sub.add_parser("downstream", help="stage: fine-tune and score a transfer task from each given model")
    p.add_argument("task", choices=list(TASKS))
    p.add_argument("--from", dest="sources", nargs="+", required=True, metavar="NAME=MODEL",
                   help="models to fine-tune from, e.g. baseline=models/pretrain bootstrapped=models/retrain")
    p.add_argument("--data", default=None, help="the task's data (default: data/TASK)")
    p.add_argument("--models", default=None,
                   help="folder of the fine-tuned models, one per NAME (default: models/TASK)")
    p.add_argument("--metrics", default=None, help="default: metrics/downstream/TASK.json")
    p.add_argument("--max-steps", type=int, default=None, help="stop each fine-tuning after this many steps")
    p.add_argument("--procs", type=int, default=None, help="processes (default: train.procs)")
    p.set_defaults(func=cmd_downstream)

    p = sub.add_parser("video-data", help="stage: a zero-shot video set as shards of clips (built-in world, or "
                                          "params data.video_KIND's MSRVTT / MSVD files)")
    p.add_argument("kind", choices=["retrieval", "qa"])
    p.add_argument("--out", required=True)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=cmd_video_data)

    p = sub.add_parser("video", help="stage: score models zero-shot on clips (text-to-video retrieval, video QA)")
    p.add_argument("kind", choices=["retrieval", "qa"])
    p.add_argument("--from", dest="sources", nargs="+", required=True, metavar="NAME=MODEL",
                   help="models to score, e.g. baseline=models/filter bootstrapped=models/filter_retrain")
    p.add_argument("--data", default=None, help="the clips (default: data/video_KIND)")
    p.add_argument("--metrics", default=None, help="default: metrics/downstream/video_KIND.json")
    p.set_defaults(func=cmd_video)

    p = sub.add_parser("ask", help="answer questions about an image with a VQA model")
    p.add_argument("image")
    p.add_argument("questions", nargs="+")
    p.add_argument("--model", required=True, help="a VQA model folder (its answer_list.json ranks) or release .pth")
    p.add_argument("--method", choices=["rank", "generate"], default=None,
                   help="rank the model's answer list (default when it has one) or generate freely")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_heads(p)
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("verify-pair", help="is each statement true of the image pair? (an NLVR2 model)")
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("statements", nargs="+")
    p.add_argument("--model", required=True, help="an NLVR model folder or the release's model_base_nlvr.pth")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    _add_heads(p)
    p.set_defaults(func=cmd_verify_pair)

    p = sub.add_parser("verify", help="check finished datasets: checksums, counts, decodable images")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--decode-sample", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metrics", default=None)
    p.set_defaults(func=cmd_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `blip` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"blip {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
