"""Which tensors a PEFT method's adapted modules save for backward, module by module: one forward
of methods.py's step with every saved storage attributed to the innermost module running when it
was first packed (deduplicated by storage, parameters and autocast's weight casts left out).
A development aid for deriving each regime crate's activation terms; writes nothing.

    /opt/pyref/bin/python tools/measure-memory/methods_breakdown.py \
        --model llama-h128-l2-gqa --method oft --targets qv --batch 2 --seq 32 --dtype-mode fp32
"""
import argparse
import os
import sys
import warnings
from collections import defaultdict

warnings.filterwarnings("ignore")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402
import methods  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-h128-l2-gqa")
    ap.add_argument("--method", required=True, help="a spec prefix of methods.py's list, e.g. oft")
    ap.add_argument("--targets", default="all", choices=["all", "qv"])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--dtype-mode", default="fp32", choices=["fp32", "autocast-bf16"])
    a = ap.parse_args()
    torch.manual_seed(0)
    table = methods.methods_for(a.model, a.targets)
    spec, make = next((s, m) for s, m in table if s.split(":")[0] == a.method)
    family, cfg, model = measure.build(a.model, "sdpa")
    from peft import get_peft_model
    model = get_peft_model(model, make())
    model.train()
    params = list(model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    buffer_ptrs = {b.untyped_storage().data_ptr() for b in model.buffers()}
    stack = ["<top>"]
    for name, mod in model.named_modules():
        mod.register_forward_pre_hook(lambda m, args, n=name: stack.append(n))
        mod.register_forward_hook(lambda m, args, out: stack.pop() and None)
    first = {}
    held = []

    def pack(t):
        held.append(t)
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in param_ptrs and ptr not in buffer_ptrs and ptr not in first:
            first[ptr] = (stack[-1], str(t.dtype).replace("torch.", ""), tuple(t.shape), st.nbytes())
        return t

    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq))
    watch = measure.CastWatch(param_ptrs)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), watch:
        if a.dtype_mode == "autocast-bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model(input_ids=ids, labels=ids)
        else:
            model(input_ids=ids, labels=ids)
    by_module = defaultdict(list)
    for ptr, (mod, dtype, shape, nbytes) in first.items():
        if ptr in watch.cast_ptrs:
            continue
        # Collapse the layer index so that one line stands for every layer.
        parts = mod.split(".")
        key = ".".join("*" if p.isdigit() else p for p in parts)
        by_module[key].append((dtype, shape, nbytes))
    total = 0
    print(f"{spec} [{a.targets}] {a.model} {a.batch}x{a.seq} {a.dtype_mode}")
    for key in sorted(by_module):
        items = by_module[key]
        s = sum(n for _, _, n in items)
        total += s
        kinds = defaultdict(int)
        for dtype, shape, n in items:
            kinds[(dtype, shape, n)] += 1
        desc = ", ".join(f"{c}x{d}{list(sh)}" for (d, sh, n), c in sorted(kinds.items(), key=lambda kv: -kv[0][2]))
        print(f"  {s:>9} {key}: {desc}")
    print(f"  {total:>9} total")


if __name__ == "__main__":
    main()
