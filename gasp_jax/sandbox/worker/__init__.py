"""The sandbox worker: standard-library modules, one per process role, run in a fresh
``python -s -S -P`` interpreter. ``pool.WORKER_BOOT`` loads them by path as the package
``gasp_sandbox_worker`` (from the sources of this directory and ``wire.py``) and calls
``main.main`` with the configuration it read on stdin. Never imported by the parent.

- ``isolation``: W's namespaces, mounts, keyring and program user namespace;
- ``runner``: J, the trusted runner (``Runner``, one ``TestRun`` per test);
- ``forkers``: the fork servers Z and T;
- ``child``: C, the test child, and the LiveCodeBench header;
- ``common``: kernel constants, libc calls and the identity drop every role uses;
- ``main``: W's entry point.

Process layout::

    parent (trainer; holds expected outputs; compares)      <- never runs untrusted code
      └─ W  worker supervisor, root: private mount + network + IPC + UTS namespaces,
            a fresh root (system dirs, /dev, /proc, private /tmp and /dev/shm, the interpreter
            and site-packages; nothing else of the host), optional cgroup
           └─ J  trusted runner = PID 1 of a private PID namespace; serves jobs over W's pipes;
              │  does every test's bookkeeping, never forks per test
              ├─ Z  persistent root fork servers for jobs of 1-2 tests (plain, and one with the
              │  │  warm modules imported)
              │  └─ C  one per test: drops to the per-worker uid and limits, compiles, runs, exits
              └─ T  one per job of >= 3 tests: non-root per-worker uid, rlimits, cwd; compiles
                 │  the program once, then serves forks like Z
                 └─ C  one per test: runs the program, exits

Each test: J writes the input into a memfd and sends "T" to the forker (Z or T); the forker
forks C, reports its pid, waits for it, kills and reaps what it left, and reports the status and
rusage. C writes into per-worker stdout/stderr/result pipes that J drains until empty after that
report. Why the split: after a fork, every page the forking process writes costs a
copy-on-write fault, so the forker runs next to no Python between forks, and J's Python-heavy
bookkeeping runs in a process no child shares pages with.

Pre-importing the LCB header modules and forking from a warm interpreter costs ~1-2 ms per
test instead of ~20 ms for a cold interpreter plus header.

Memory hygiene: Z, T and C are forks of J, so anything J holds on its heap is readable by the
untrusted program. J therefore never holds expected outputs (they never leave the parent), and it
keeps all user data (program text, inputs, outputs, stderr) only in ``MADV_DONTFORK`` mappings
that it reads into and writes from without copies. A forked child does not inherit those
mappings, so a later program cannot scan memory for an earlier program's output. T lives for
one job only; Z holds no user data.
"""
