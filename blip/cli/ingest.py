"""`blip ingest karpathy|web`: a human set into shards, or a web set registered where it is."""

from __future__ import annotations

import argparse

from blip.params import load_params


def run(args: argparse.Namespace) -> int:
    """Ingest a Karpathy JSON set, or register web shards, and print what was kept and skipped."""
    if args.kind == "karpathy":
        from blip.data.karpathy import ingest_karpathy

        params = load_params(args.params)
        manifests = ingest_karpathy(args.json, args.images, args.out, params.ingest, dataset=args.name,
                                    default_split=args.split)
        for split, m in manifests.items():
            print(f"{split}: {m['samples']} images, {m['texts']} captions, skipped {m['skipped']}")
        return 0
    from blip.data.web import register_web

    m = register_web(args.shards, args.out)
    print(f"registered {len(m['shards'])} shards, {m['samples']} samples, {m['bytes']} bytes, in place "
          f"(counted from _stats.json: {m['counted_by']['stats']}, by reading: {m['counted_by']['scan']}) "
          f"-> {args.out}/manifest.json")
    return 0


def add(sub: argparse._SubParsersAction) -> None:
    """Add the command's parser and its two kinds."""
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
    p.set_defaults(func=run)
