"""What several commands share: the device help, writing a metrics file, `--from NAME=MODEL` pairs."""

from __future__ import annotations

from pathlib import Path

DEVICE_HELP = "auto | cpu | cuda | cuda:N (auto: this rank's GPU when CUDA is present, else the CPU)"


def write_metrics(path: str | Path | None, metrics: dict) -> None:
    """Write a command's metrics JSON atomically (nothing when no path is given)."""
    if path:
        from blip.data.shards import atomic_write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(path), metrics)


def parse_sources(specs: list[str]) -> dict[str, str]:
    """`--from NAME=MODEL ...` as {name: model folder}."""
    sources = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--from takes NAME=MODEL pairs (e.g. baseline=models/pretrain), got {spec!r}")
        sources[name] = path
    return sources
