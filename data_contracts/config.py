"""The contracts' section of params.yaml (`contracts`): the bounds every bootstrapped dataset must meet."""

from __future__ import annotations

from pydantic import model_validator

from blip.config import NonNegInt, PosInt, Range, ordered, section


@section
class ContractsConfig:
    min_words: PosInt                   # caption word-count bounds (after clean-up)
    max_words: PosInt
    max_word_chars: PosInt              # the longest word a caption may hold (catches one enormous word)
    image_sample: NonNegInt             # images decoded per dataset (the rest: metadata only)
    row_sample: PosInt                  # rows shown row by row (Data Docs); every row is checked in aggregate
    sample_shards: PosInt               # web / bootstrapped: the input shards the decoded sample is read from
    memory_mb: PosInt                   # DuckDB's memory for the aggregates over the tables (it spills past it)
    synthetic_share: Range              # bootstrapped: share of rows that are synthetic captions
    web_removed_share: Range            # share of web texts the filter removed
    noise_ratio: Range                  # share of synthetic captions the filter removed

    @model_validator(mode="after")
    def _bounds(self) -> ContractsConfig:
        ordered(self.min_words, self.max_words, "min_words, max_words")
        for name in ("synthetic_share", "web_removed_share", "noise_ratio"):
            ordered(*getattr(self, name), name)
        return self
