"""Runs one protocol training job so that it never outlives the protocol unnoticed.

    python -m gasp_jax.protocol.child --config=RUNDIR/run_config.py --workdir=RUNDIR

The job gets SIGTERM when its parent (the protocol process) dies, however it dies (Linux
`PR_SET_PDEATHSIG`): the trainer then saves a checkpoint at the end of its iteration and stops, and the
next protocol invocation resumes it. It then execs `python -m gasp_jax.main` with the same arguments.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the run lock still keeps a second copy out
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        sys.exit(1)
    os.execv(sys.executable, [sys.executable, "-m", "gasp_jax.main", *sys.argv[1:]])


if __name__ == "__main__":
    main()
