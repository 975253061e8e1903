r"""Table 1 on the tiny CPU model: every method x 2 seeds, end to end in minutes (numbers meaningless).

    python -m gasp_jax.protocol --experiment=configs/experiments/tiny_cpu.py --workdir=runs/table1_tiny
    cat runs/table1_tiny/table1.md

The warm-started tiny model (configs/warmstart.py, cached) is the base; AZR, RLVR, GASP and GASP + RLVR
train from it for 2 iterations per seed with their `tiny` presets, each run a `gasp_jax.main` job in
`runs/<method>/seed<s>/`. Every final checkpoint (and the base) is evaluated the same way: LCB pass@1 and
pass@2 (n = 2) on 2 short held-out problems (>= 2024-08-01), goalposts solved (n = 2) on 2 short LCB
goalposts (both with LCB's user message alone as the prompt, `prompt.style="question"`, as the RLVR
preset trains), HumanEval and MBPP+ pass@1 on 2 problems each. Expect
every pass rate to be 0 (a 2-iteration tiny model solves nothing) and every cell to be filled. Rerunning
the command reuses everything done.

Args (`:ARG`): `small` = base + RLVR only, 1 iteration (the default test suite's end-to-end run).
"""

import ml_collections

HELD_OUT = ("3676", "abc383_d")  # short statements after 2024-08-01
GOALPOSTS = ("3374", "3395")  # short statements before 2024-08-01
HUMANEVAL = ("HumanEval/2", "HumanEval/23")
MBPP_PLUS = ("Mbpp/17", "Mbpp/80")
TINY_MODEL = dict(dtype="float32", use_mesh=False)
TINY_SANDBOX = dict(workers=2, limits=dict(cpu_s=2.0))


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.name = "Table 1 (tiny CPU model; plumbing, not results)"
    c.methods = ("base", "azr", "rlvr", "gasp", "gasp_rlvr")
    c.seeds = (0, 1)
    c.preset = "tiny"
    c.budget = ml_collections.ConfigDict(dict(steps=2))
    c.base = ml_collections.ConfigDict(dict(hf_path="", warmstart=True))
    c.data = ml_collections.ConfigDict(dict(lcb="", release=""))
    c.goalposts = ml_collections.ConfigDict(dict(ids=GOALPOSTS, report=""))
    c.train_eval = False
    c.executor = "subprocess"
    c.max_attempts = 2
    c.overrides = ml_collections.ConfigDict()
    c.overrides.all = ml_collections.ConfigDict(dict(checkpoint=dict(every=1, keep=3)))
    c.overrides.azr = ml_collections.ConfigDict(dict(sources=dict(azr=dict(propose_per_kind=2, solve_per_kind=2))))
    # The table's evaluations replace the presets' evaluation during training (hook kept, turned off).
    c.overrides.rlvr = ml_collections.ConfigDict(dict(eval=dict(every=0)))
    c.overrides.gasp_rlvr = ml_collections.ConfigDict(dict(eval=dict(every=0)))
    c.overrides.gasp = ml_collections.ConfigDict(dict(sources=dict(gasp=dict(eval=dict(every=0)))))

    c.eval = ml_collections.ConfigDict()
    c.eval.checkpoints = "final"
    c.eval.model = ml_collections.ConfigDict(TINY_MODEL)
    # LCB's user message alone (`question`; not LCB's chat format, as configs/rlvr.py:tiny trains with) and
    # the model's whole context as the KV cache (max_prompt_tokens 0); checked against the base model
    # before anything runs.
    sampling = dict(n=2, temperature=1.0, top_p=1.0, max_new_tokens=32, max_prompt_tokens=0, batch_problems=2)
    c.eval.lcb = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(
        data=dict(problem_ids=HELD_OUT), prompt=dict(style="question"), sampling=sampling, ks=(1, 2),
        sandbox=TINY_SANDBOX)))
    c.eval.goalposts = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(
        prompt=dict(style="question"), sampling=sampling, ks=(1, 2), sandbox=TINY_SANDBOX)))
    greedy = dict(n=1, temperature=0.0, max_new_tokens=32, max_prompt_tokens=0, batch_problems=2)
    c.eval.humaneval = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(
        data=dict(problem_ids=HUMANEVAL), sampling=greedy, sandbox=TINY_SANDBOX)))
    c.eval.mbpp_plus = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(
        data=dict(problem_ids=MBPP_PLUS), sampling=greedy, sandbox=TINY_SANDBOX)))
    c.table = ml_collections.ConfigDict(dict(ks=(1, 2)))

    if arg == "small":
        c.methods = ("base", "rlvr")
        c.budget.steps = 1
        c.eval.humaneval.overrides.data.problem_ids = HUMANEVAL[:1]
        c.eval.mbpp_plus.overrides.data.problem_ids = MBPP_PLUS[:1]
    elif arg:
        raise ValueError(f"configs/experiments/tiny_cpu.py: unknown arg {arg!r}; expected '' or 'small'")
    return c
