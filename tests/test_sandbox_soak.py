"""Soak: 10,000 mixed runs (catalogue classes A-E) at full concurrency. Slow; run with -m slow."""

from __future__ import annotations

import os
import random
import resource
import time

import pytest

from gasp_jax.sandbox import Limits, Sandbox, Status, TestCase
from tests.test_sandbox_support import CAN_ISOLATE, host_tmp_entries, open_fds, sandbox_uid_processes, sandbox_uids

ADD = [TestCase("1 2\n", "3\n"), TestCase("5 7\n", "12\n")]
LIMITS = Limits(cpu_s=1.0, wall_s=1.0, memory_bytes=512 << 20, stdout_bytes=1 << 20)

# (program, tests, fn_name, expected status)
MIX = [
    ("print(sum(map(int, input().split())))", ADD, None, Status.PASS),
    ("import sys\nprint(sum(map(int, sys.stdin.read().split())))", ADD, None, Status.PASS),
    ("print(3)", ADD, None, Status.WA),
    ("raise ValueError('x')", ADD, None, Status.RE),
    ("def f(:", ADD, None, Status.CE),
    ("", ADD, None, Status.CE),
    ("import time\ntime.sleep(5)", ADD, None, Status.TLE),
    ("while True: print('x' * 100000)", ADD, None, Status.OLE),
    ("x = bytearray(10**10)", ADD, None, Status.MLE),
    ("import os\nif os.fork() == 0:\n    import time; time.sleep(60)\nprint(sum(map(int, input().split())))",
     ADD, None, Status.PASS),
    ("class Solution:\n    def f(self, a, b):\n        return [a, b]", [TestCase("1\n2", "[1, 2]")], "f", Status.PASS),
    ("class Solution:\n    def f(self, a, b):\n        return object()", [TestCase("1\n2", "[1, 2]")], "f", Status.RE),
    ("print(1)", [], None, Status.INFRA_ERROR),  # data error
]
WEIGHTS = [30, 20, 10, 8, 5, 3, 1, 1, 2, 3, 10, 4, 3]


@pytest.mark.slow
def test_soak_10k_mixed_runs():
    rng = random.Random(0)
    plan = rng.choices(range(len(MIX)), weights=WEIGHTS, k=10_000)
    fds0, tmp0 = open_fds(), host_tmp_entries()
    with Sandbox(workers=os.cpu_count() or 2, limits=LIMITS, allow_unsafe=not CAN_ISOLATE) as sb:
        if sb.isolation.level != "full":
            pytest.skip(f"the soak mix forks daemons: needs isolation level full, detected {sb.isolation.level}")
        uids = sandbox_uids(sb)
        # Sequential reference verdicts for each kind, then the full concurrent run.
        sequential = {k: sb.grade(MIX[k][0], MIX[k][1], fn_name=MIX[k][2]).status for k in range(len(MIX))}
        assert sequential == {k: MIX[k][3] for k in range(len(MIX))}
        rss = []
        t0 = time.perf_counter()
        for chunk in range(0, len(plan), 1000):
            starts, futures = [], []
            for k in plan[chunk:chunk + 1000]:
                starts.append(time.perf_counter())
                futures.append(sb.submit(MIX[k][0], MIX[k][1], fn_name=MIX[k][2]))
            for k, s, f in zip(plan[chunk:chunk + 1000], starts, futures):
                v = f.result(timeout=600)
                assert v.status == MIX[k][3], (k, v)
            rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        elapsed = time.perf_counter() - t0
        assert sb.stats["infra_errors"] == 0
        assert rss[-1] - rss[0] < 100_000, f"parent RSS grew {rss[-1] - rss[0]} KiB"
        worker_rss = [int(open(f"/proc/{w.proc.pid}/status").read().split("VmRSS:")[1].split()[0])
                      for w in sb._procs]
        assert max(worker_rss) < 200_000
    assert not sandbox_uid_processes(uids)
    assert open_fds() == fds0 and host_tmp_entries() == tmp0
    cheap = [k for k in plan if MIX[k][3] not in (Status.TLE, Status.OLE, Status.MLE)]
    print(f"soak: {len(plan)} runs in {elapsed:.1f}s ({len(plan) / elapsed:.0f}/s), {len(cheap)} cheap")
