"""The names of CapFilt's outputs, for the stages that read them without loading a model (select, contracts)."""

SCORES_FORMAT = "blip-scores/2"       # the scores manifest: every table by URL and sha256, the counts, the models
TABLE_PATTERN = "scores-{:06d}.parquet"  # input shard i's table, in the job's table folder
CALIBRATION = "calibration.parquet"   # the human val pairs, scored
