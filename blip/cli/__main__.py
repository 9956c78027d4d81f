"""`python -m blip.cli`: what the launchers (DeepSpeed, torchrun) and the rounds run."""

import sys

from blip.cli import main

sys.exit(main())
