"""Resource limits for one sandboxed test execution."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Limits:
    """Per-test limits. Every test of a program runs in its own process with these limits.

    ``cpu_s`` is the verdict-deciding limit (CPU time judges fairly under load); the wall-clock
    backstop ``wall_s`` (default ``2 * cpu_s + 1``) catches programs that sleep or block. Both are
    enforced from outside the program: RLIMIT_CPU (soft = ceil(cpu_s), hard = soft + 1 so the
    uncatchable SIGKILL follows the catchable SIGXCPU) and a SIGKILL of the whole process tree
    by the trusted runner at the wall deadline.
    """

    cpu_s: float = 6.0
    wall_s: float | None = None
    memory_bytes: int = 2 * GiB  # RLIMIT_AS per process
    stack_bytes: int = 512 * MiB  # deep recursion (lru_cache at depth 1e5) needs a big C stack
    file_size_bytes: int = 16 * MiB  # RLIMIT_FSIZE
    open_files: int = 256  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC for the sandbox uid (counts threads too)
    stdout_bytes: int = 64 * MiB  # output beyond this is OLE; the process tree is killed
    stderr_tail_bytes: int = 8 * 1024  # only the last bytes of stderr are kept
    tmpfs_bytes: int = 64 * MiB  # size of the private /tmp and /dev/shm of a worker
    group_memory_bytes: int | None = None  # cgroup cap on a whole worker; default memory_bytes + 512 MiB

    def __post_init__(self) -> None:
        if not (self.cpu_s > 0 and math.isfinite(self.cpu_s)):
            raise ValueError(f"cpu_s must be a positive number, got {self.cpu_s!r}")
        if self.wall_s is not None and not (self.wall_s > 0 and math.isfinite(self.wall_s)):
            raise ValueError(f"wall_s must be a positive number, got {self.wall_s!r}")
        for name in ("memory_bytes", "stack_bytes", "file_size_bytes", "open_files", "processes",
                     "stdout_bytes", "stderr_tail_bytes", "tmpfs_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.open_files < 16:
            raise ValueError("open_files below 16 cannot start a Python program")

    @property
    def wall_deadline_s(self) -> float:
        return self.wall_s if self.wall_s is not None else 2.0 * self.cpu_s + 1.0

    @property
    def cgroup_bytes(self) -> int:
        if self.group_memory_bytes is not None:
            return self.group_memory_bytes
        return self.memory_bytes + 512 * MiB + 2 * self.tmpfs_bytes

    def replace(self, **changes: Any) -> "Limits":
        return dataclasses.replace(self, **changes)

    def to_wire(self) -> dict[str, Any]:
        """The subset the in-sandbox runner needs (plain JSON)."""
        soft = max(1, math.ceil(self.cpu_s))
        return {
            "cpu_soft": soft,
            "cpu_hard": soft + 1,
            "wall": self.wall_deadline_s,
            "as": self.memory_bytes,
            "stack": self.stack_bytes,
            "fsize": self.file_size_bytes,
            "nofile": self.open_files,
            "nproc": self.processes,
            "out": self.stdout_bytes,
            "err": self.stderr_tail_bytes,
        }


DEFAULT_LIMITS = Limits()
