r"""Table 1 at paper scale: base, AZR, RLVR, GASP, GASP + RLVR on Qwen2.5-Coder-7B, 3 seeds.

    python -m gasp_jax.protocol --experiment=configs/experiments/paper.py --workdir=runs/table1 \
        --experiment.base.hf_path=/ckpts/Qwen2.5-Coder-7B \
        --experiment.data.lcb=/data/lcb/code_generation_lite --experiment.data.release=release_v5 \
        --experiment.goalposts.report=runs/goalposts/goalposts.json

Every method trains 500 iterations per seed (the configs' `paper` presets: AZR's optimisation
settings) from the base checkpoint; every final checkpoint is evaluated with one protocol: LCB v5 after
2024-08-01 (configs/lcb_eval.py: n = 20 at T = 0.2, top-p 0.95, pass@1 and pass@20), goalposts solved
(n = 100 at T = 1.0: a goalpost is solved when any sample passes every test, the opposite of its
selection criterion pass@100 = 0), HumanEval and MBPP+ (greedy pass@1, as AZR reports them). The
goalposts report comes from the lcb_goalposts job on the RLVR selection runs (the paper: 146 of 601).
Set `--experiment.eval.checkpoints=all` to evaluate every saved checkpoint as well (curves in the JSON).
"""

import ml_collections


def get_config(arg=None):
    del arg
    c = ml_collections.ConfigDict()
    c.name = "Table 1: LiveCodeBench v5 (after 2024-08-01), Qwen2.5-Coder-7B"
    c.methods = ("base", "azr", "rlvr", "gasp", "gasp_rlvr")
    c.seeds = (0, 1, 2)
    c.preset = "paper"
    c.budget = ml_collections.ConfigDict(dict(steps=500))
    c.base = ml_collections.ConfigDict(dict(hf_path="", warmstart=False))  # set base.hf_path
    c.data = ml_collections.ConfigDict(dict(lcb="", release=""))  # the LCB release (private tests)
    c.goalposts = ml_collections.ConfigDict(dict(ids=(), report=""))  # set goalposts.report
    c.train_eval = True  # eval/... curves in every run's TensorBoard
    c.executor = "subprocess"
    c.max_attempts = 3
    c.overrides = ml_collections.ConfigDict()
    c.eval = ml_collections.ConfigDict()
    c.eval.checkpoints = "final"
    c.eval.model = ml_collections.ConfigDict(dict(dtype="bfloat16", use_mesh=True))
    c.eval.lcb = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(ks=(1, 5, 10, 20))))
    c.eval.goalposts = ml_collections.ConfigDict(dict(enabled=True, overrides=dict(
        sampling=dict(n=100, temperature=1.0, top_p=1.0), ks=(1, 10, 100))))
    c.eval.humaneval = ml_collections.ConfigDict(dict(enabled=True, overrides=dict()))
    c.eval.mbpp_plus = ml_collections.ConfigDict(dict(enabled=True, overrides=dict()))
    c.table = ml_collections.ConfigDict(dict(ks=(1, 20)))
    return c
