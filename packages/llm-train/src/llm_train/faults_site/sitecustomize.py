"""On the PYTHONPATH of a run under `python -m llm_train.faults`, so the workers `accelerate launch`
starts are armed too."""

from llm_train.faults import arm_from_env

arm_from_env()
