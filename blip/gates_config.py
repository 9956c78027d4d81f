"""The quality gates' section of params.yaml (`gates`), light to import (blip/gates.py runs the evaluation)."""

from __future__ import annotations

from typing import Literal

from blip.config import PosFloat, Share, section


@section
class GatesConfig:
    on_fail: Literal["stop", "warn"]    # stop the chain, or record the failure and go on (a smoke run)
    filter_min_auc: Share               # the filter's ITM AUC, true human val pairs against another image's caption
    min_recall: Share                   # share of true human val pairs kept at the chosen (or calibrated) threshold
    captioner_min_cider_ratio: PosFloat # the captioner's CIDEr on human val over its chance level (another image's)
