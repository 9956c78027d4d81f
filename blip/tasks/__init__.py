"""The tasks, each one folder: the unit of change.

A task folder holds its model (a `Blip` subclass over the shared parts in blip/models/, registered by
class), its training inputs (a `TrainTask`, which the generic engine runs), its data readers, its
evaluation, its stage and its serving, and hands the registry (registry.py) one `Task` (spec.py). Adding
a task is its folder, a line in the registry, its stage in dvc.yaml and its settings in params.yaml.
"""
