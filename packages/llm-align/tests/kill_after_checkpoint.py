"""SIGKILL a run right after the Trainer has fully written checkpoint-4: a real kill at a fixed point, so a
test never races the run (a sleep-then-kill test passed here and failed on a faster CI machine).

`python kill_after_checkpoint.py <command> <args...>` runs `llm-align <command>` with the kill armed. For a
multi-process run, whose workers `accelerate launch` starts afresh, a test copies this file as
`sitecustomize.py` into a folder on the workers' PYTHONPATH, which arms it in every process; each worker
then dies once every rank's RNG state is in the checkpoint, so the checkpoint is whole."""

import os
import signal
import sys
import time
from pathlib import Path

from transformers import Trainer

save = Trainer._save_checkpoint


def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.state.global_step >= 4:
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        ranks = self.args.world_size
        while ranks > 1 and not all((folder / f"rng_state_{i}.pth").is_file() for i in range(ranks)):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._save_checkpoint = save_then_die

if __name__ == "__main__":
    from llm_align.cli import main

    sys.exit(main(sys.argv[1:]))
