"""core.distributed in one process: what `together` / `on_main` raise for a process's own failure."""
import pytest
from accelerate import Accelerator

from maskds.core.distributed import ProcessError, on_main, together


def test_an_oserror_becomes_a_process_error_naming_the_step():
    acc = Accelerator(cpu=True)

    def write():
        raise IsADirectoryError(21, "Is a directory", "runs/x/best.safetensors")

    with pytest.raises(ProcessError, match="writing the checkpoint: .*Is a directory.*best.safetensors"):
        together(acc, "writing the checkpoint", write)


def test_other_errors_keep_their_type_and_results_pass_through():
    acc = Accelerator(cpu=True)
    with pytest.raises(KeyError):
        on_main(acc, "reading", lambda: {}["missing"])
    assert together(acc, "adding", lambda: 1 + 1) == 2
    assert on_main(acc, "adding", lambda: 3) == 3  # a single process is the main process
