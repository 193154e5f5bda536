"""What every benchmark's command line does the same way: join, die, write the result.

Each ``python -m validation.<benchmark>`` runs once per rank under a launcher
(or torchrun, or alone), joins the group from the environment, and on rank 0
writes its result document atomically. A failure is one line on stderr and
exit status 3, whatever the benchmark.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from validation.guard import EXIT_DIST_FAILURE
from validation.ports import free_port
from validation.rendezvous import DistSession, RendezvousError, init_from_env


def write_json(path: str, text: str) -> None:
    """Write then rename, so a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, target)


def die(prog: str, message: str) -> NoReturn:
    """Print the one-line error and leave without running finalizers.

    After a failed collective a backend thread may still be blocked; normal
    interpreter shutdown would join it and could wait out the full timeout.
    """
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_DIST_FAILURE)


def join_group(prog: str, backend: str, timeout_s: float) -> DistSession:
    """Join the group the launcher describes; alone, a one-process group on this machine."""
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        os.environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(free_port()),
        )
    try:
        return init_from_env(backend, timeout_s)
    except RendezvousError as exc:
        die(prog, str(exc))
    except RuntimeError as exc:  # init_process_group itself failed or timed out
        die(prog, f"joining the process group failed: {exc}")
