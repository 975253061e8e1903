"""The import structure docs/architecture.md describes: no cycles, and imports that run one way.

Imports are read with `ast` (module level and inside functions alike), so a lazy import counts as a
dependency: a circle cannot hide inside a function.
"""

from __future__ import annotations

import ast
import collections
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gasp_jax")

#: Lowest layer: infrastructure that knows nothing of tasks, policies or methods.
FOUNDATION = ("cache_dirs", "data", "kernels", "sharding", "tokenizer", "checkpoint", "metrics", "multihost", "overrides",
              "config_checks", "config_files", "perf", "sandbox", "models", "tasks", "rl", "sampling",
              "runtime", "profiling")
#: Method layer: self-play, GASP, RLVR, evaluation, warm start.
METHODS = ("selfplay", "gasp", "rlvr", "evaluation", "warmstart")
#: Entry points: nothing in the library imports them (the protocol starts `main` in a child process).
ENTRY_POINTS = ("jobs", "protocol", "benchmarks", "plan", "sweep", "main")
#: Building blocks of a rollout that must not know the sources built on them, nor the trainer.
BUILDING_BLOCKS = ("selfplay.types", "selfplay.settings", "selfplay.phases", "selfplay.steps",
                   "selfplay.policy", "selfplay.buffers", "gasp.rewards", "gasp.prompts", "gasp.dedup", "gasp.goalposts",
                   "gasp.curriculum", "gasp.dynamic", "gasp.evaluation")
SOURCES_AND_TRAINER = ("selfplay.azr", "gasp.source", "rlvr.source", "selfplay.sources", "selfplay.trainer",
                       "evaluation.periodic")


def _modules() -> dict[str, str]:
    mods = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                mods[mod.removesuffix(".__init__")] = path
    return mods


def _imports() -> dict[str, set[str]]:
    """module -> the gasp_jax modules it imports (anywhere in the file)."""
    mods = _modules()
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod and not mod.startswith(target + "."):
                    edges[mod].add(target)
    return edges


def _short(mod: str) -> str:
    return mod.removeprefix("gasp_jax.")


def _in(mod: str, groups) -> bool:
    short = _short(mod)
    return any(short == g or short.startswith(g + ".") for g in groups)


@pytest.fixture(scope="module")
def edges():
    return _imports()


def test_no_import_cycles(edges):
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(map(_short, component)))

    for mod in list(edges):
        if mod not in index:
            visit(mod)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("lower,upper,name", [
    (FOUNDATION, METHODS + ENTRY_POINTS + ("aot",), "foundation -> methods/entry points"),
    (METHODS + FOUNDATION + ("aot",), ENTRY_POINTS, "library -> entry points"),
    (BUILDING_BLOCKS, SOURCES_AND_TRAINER, "building blocks -> sources/trainer"),
])
def test_imports_run_one_way(edges, lower, upper, name):
    allowed = {("gasp_jax.protocol.training", "gasp_jax.main")}  # the protocol's runs are `main` jobs
    upward = sorted(f"{_short(a)} -> {_short(b)}" for a, targets in edges.items() for b in targets
                    if _in(a, lower) and _in(b, upper) and not _in(a, upper) and (a, b) not in allowed)
    assert not upward, f"{name}: {upward}"


def test_evaluation_never_imports_gasp(edges):
    # The periodic evaluation is every method's; GASP hands it the goalposts measure (selfplay/sources.py).
    sideways = sorted(f"{_short(a)} -> {_short(b)}" for a, targets in edges.items() for b in targets
                      if _in(a, ("evaluation",)) and _in(b, ("gasp",)))
    assert not sideways, sideways


#: Imports a function may make: heavy optional dependencies, loaded only on the path that needs them.
LAZY_ALLOWED = ("tensorboardX", "transformers", "datasets", "torch", "vllm")
#: The sandbox's own programs (standard library only, run inside the isolated processes; what they import
#: and when is part of the isolation): not library modules.
SANDBOX_PROGRAMS = ("gasp_jax/sandbox/worker/", "gasp_jax/tasks/child.py")


def _commented(lines: list[str], i: int) -> bool:
    """A comment on import line `i`, or on the import lines right above it (one comment per block)."""
    while i >= 0 and lines[i].lstrip().startswith(("import ", "from ")):
        if "#" in lines[i]:
            return True
        i -= 1
    return False


def test_no_function_level_imports_but_heavy_optional_ones():
    """A lazy import hides a dependency from readers and tools (and hid a broken import in a benchmark):
    imports sit at the top, except the heavy optional ones above, each with a comment saying why."""
    found = []
    for mod, path in _modules().items():
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        if rel.startswith(SANDBOX_PROGRAMS):
            continue
        with open(path, encoding="utf-8") as f:
            source = f.read()
        lines = source.splitlines()
        for func in ast.walk(ast.parse(source, path)):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    name = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                    line = lines[node.lineno - 1]
                    if name.split(".")[0] not in LAZY_ALLOWED:
                        found.append(f"{rel}:{node.lineno}: {line.strip()}")
                    elif not _commented(lines, node.lineno - 1):
                        found.append(f"{rel}:{node.lineno}: no comment saying why: {line.strip()}")
    assert not found, "function-level imports:\n" + "\n".join(sorted(set(found)))


def test_the_checker_sees_imports_inside_functions(edges):
    # `aot` imports the trainer inside a function only: the graph must still hold that edge, or the
    # checks above could pass on a graph that misses lazy imports.
    assert "gasp_jax.selfplay.trainer" in edges["gasp_jax.aot"]


def test_entry_points_import_into_one_process():
    # absl flags are process-global: an entry point defining `--config` at import stops any other from
    # being imported next to it (DuplicateFlagError). Each defines its flags only when run as the program.
    code = ("import gasp_jax.main, gasp_jax.plan, gasp_jax.protocol.__main__, gasp_jax.sweep\n"
            "from absl import flags\n"
            "assert 'config' not in flags.FLAGS, 'an entry point defined --config at import'\n"
            "cli = gasp_jax.plan.define_flags()\n"
            "flags.FLAGS(['plan', '--config=configs/azr.py:tiny', '--num_devices=8'])\n"
            "assert cli.config.value.job == 'selfplay' and cli.num_devices.value == 8\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
