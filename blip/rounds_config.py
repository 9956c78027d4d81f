"""The rounds' sections of params.yaml (`rounds`, `retrain`), light to import (blip/rounds.py runs the steps)."""

from __future__ import annotations

from blip.config import PosInt, Str, section

Rounds = PosInt  # `rounds`: bootstrapping rounds in all (1: the main chain alone; blip/rounds.py runs 2..R)


@section
class RetrainConfig:
    init_from: Str  # "" = from scratch (the paper); a model folder = continue it (ablation)
