"""Selection's section of params.yaml (`select`): which scored texts are kept (read by the rule and the job)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, Strict, model_validator

from blip.config import Bool, Float, NonNegFloat, NonNegInt, PosInt, Share, section


@section
class SelectConfig:
    threshold: Float                  # keep a text whose score reaches this (when calibrate is false)
    calibrate: Bool                   # the threshold: the lowest one reaching target_precision on human val pairs
    target_precision: Annotated[float, Strict(), Field(gt=0, le=1)]
    filter_combine: Literal["mean", "vote"]  # mean of the filters' scores | majority of filters at the threshold
    itm_weight: NonNegFloat           # a filter's score: itm_weight x ITM probability + itc_weight x ITC similarity
    itc_weight: NonNegFloat
    top_percent: Annotated[float, Strict(), Field(gt=0, le=100)] | None  # keep only the best this % (None: no such cut)
    max_texts_per_image: PosInt | None  # the best this many texts of an image (None: no cap)
    max_web: NonNegInt | None         # the best this many web texts over the whole dataset (None: no cap)
    max_synthetic: NonNegInt | None
    web_share: Share | None           # web texts' share of the kept web + synthetic texts (None: as selected)
    examples: NonNegInt               # web images shown in the examples sheet

    @model_validator(mode="after")
    def _reachable(self) -> SelectConfig:
        if self.itm_weight == 0 and self.itc_weight == 0:
            raise ValueError("itm_weight and itc_weight are both 0: every score would be 0")
        # ITM probability is in [0, 1] and ITC cosine in [-1, 1]: a threshold outside keeps all or nothing
        low, high = -self.itc_weight or 0.0, self.itm_weight + self.itc_weight
        if not low <= self.threshold <= high:
            raise ValueError(f"threshold {self.threshold} is outside the scores' range [{low:g}, {high:g}] "
                             "for these weights: it would keep everything or nothing")
        return self
