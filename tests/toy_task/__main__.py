"""`python -m tests.toy_task PARAMS PRETRAINED DATA MODELS MAX_STEPS`: list the toy task in the registry as
blip/tasks/registry.py lists every task, run its stage through the registry, print the result as JSON."""

from __future__ import annotations

import json
import sys

from blip.params import load_params
from blip.tasks import registry
from tests.toy_task.task import TASK

registry.TASKS["toy"] = TASK  # the one line blip/tasks/registry.py would gain
params_path, pretrained, data_dir, models_dir, max_steps = sys.argv[1:]
params = load_params(params_path)  # its presets hold finetune_toy: the registry's tasks declare the schema
result = registry.transfer_task("toy").run(params, {"base": pretrained}, data_dir, models_dir, int(max_steps))
print("RESULT " + json.dumps(result))
