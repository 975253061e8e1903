"""vLLM peer for `python -m gasp_jax.benchmarks.sampler --workload ragged --peers vllm`.

Runs in vLLM's own virtual environment (vLLM pins its own torch), as a script loaded by path: it imports
only the standard library and vllm, never gasp_jax. The parent writes the requests to a JSON file,
starts this script, and then drives it over stdin / stdout, one JSON line each way, so that rounds of
the two engines interleave while each keeps its warm state:

    {"cmd": "run", "order": "given" | "longest_first"}  ->  {"seconds": s, "tokens": [[...], ...], "load": [...]}
    {"cmd": "quit"}

The first line this script prints is {"ready": true, "first_call_s": s, "version": v}: engine start-up
(model load, warm-up) plus the first full run of the workload, the figure compared with our first call.
Greedy, no stop ids (`ignore_eos`): every row generates exactly its limit, as in the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="HF checkpoint directory (exported with save_hf)")
    p.add_argument("--requests", required=True, help="JSON file: {'prompts': [[ids]], 'limits': [n]}")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--max-num-seqs", type=int, default=16)
    p.add_argument("--memory-fraction", type=float, default=0.1,
                   help="share of host memory vLLM-CPU reserves (its gpu_memory_utilization); the box is shared")
    args = p.parse_args()
    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams, __version__  # optional, vLLM's own venv; timed as part of the first call
    from vllm.inputs import TokensPrompt

    with open(args.requests) as f:
        spec = json.load(f)
    prompts, limits = spec["prompts"], spec["limits"]
    llm = LLM(model=args.model, dtype=args.dtype, max_num_seqs=args.max_num_seqs, skip_tokenizer_init=True,
              max_model_len=max(len(q) for q in prompts) + max(limits), seed=0,
              gpu_memory_utilization=args.memory_fraction)

    def run(order: str) -> tuple[float, list[list[int]]]:
        index = list(range(len(prompts)))
        if order == "longest_first":
            index.sort(key=lambda k: -limits[k])
        params = [SamplingParams(temperature=0.0, max_tokens=limits[k], min_tokens=limits[k], ignore_eos=True,
                                 detokenize=False) for k in index]
        start = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=prompts[k]) for k in index], params, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens: list[list[int]] = [[] for _ in prompts]
        for k, out in zip(index, outs):
            tokens[k] = list(out.outputs[0].token_ids)
        return seconds, tokens

    run("given")
    print(json.dumps({"ready": True, "first_call_s": time.perf_counter() - t0, "version": __version__}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("cmd") == "quit":
            break
        load_before = os.getloadavg()[0]
        seconds, tokens = run(msg.get("order", "given"))
        print(json.dumps({"seconds": seconds, "tokens": tokens, "load": [load_before, os.getloadavg()[0]]}), flush=True)


if __name__ == "__main__":
    main()
