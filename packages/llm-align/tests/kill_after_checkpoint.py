"""`python kill_after_checkpoint.py <command> <args...>`: run `llm-align <command>`, and SIGKILL the process
right after the Trainer has fully written checkpoint-4. A real kill at a fixed point, so a test never races
the run (a sleep-then-kill test passed here and failed on a faster CI machine)."""

import os
import signal
import sys

from llm_align.cli import main
from transformers import Trainer

save = Trainer._save_checkpoint


def save_then_die(self, *args, **kwargs):
    save(self, *args, **kwargs)
    if self.state.global_step >= 4:
        os.kill(os.getpid(), signal.SIGKILL)


Trainer._save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
