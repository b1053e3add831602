"""Measure the step peak under the techniques people use to fit (MemTracker, CPU, two steps).

Writes fixtures/memory/measured_peak_techniques.json (see fixtures/memory/README.md, "Peak of the
step: techniques"). Each record is a measure_peak.py record with a `technique` field:

- `loss-chunked`: torchtune's CEWithChunkedOutputLoss (8 chunks): the lm_head applied to each
  sequence chunk of the hidden states (all chunks' logits alive, as torchtune's model returns
  them), each chunk upcast to fp32 for its cross-entropy (reduction "sum" over the chunk, divided
  by the number of labelled tokens).
- `loss-fused`: Liger-Kernel's LigerFusedLinearCrossEntropyFunction (reduction "mean") in plain
  torch, allocation for allocation: grad_input (BT x H), grad_weight (V x H, trained head) and
  loss_1d first; chunks of `next_power_of_2(ceil(BT / ceil(V / H)))` rows whose logits (the input
  dtype) are turned into their gradient in place, one row at a time in fp32 (the kernel's
  registers), then projected into grad_input and accumulated into grad_weight; both saved for the
  backward, which returns them as they are (grad_output is 1). The full logits never exist.
- `optimizer-in-backward`: one AdamW (foreach, as the default) per trainable tensor, stepped in
  its `register_post_accumulate_grad_hook`, the gradient set to None right after (torchtune's
  `optimizer_in_bwd`, PyTorch's tutorial pattern).
- `activation-offload`: torchtune's OffloadActivations with use_streams=False: a saved tensor of at
  least 1024 bytes that is not a parameter or buffer is copied to host memory when saved (each
  save on its own) and back when the backward unpacks it; the output head runs under torchtune's
  NoOpManager. On this CPU-only box the host copy is made outside MemTracker's view, so the
  tracked bytes are what stays on the device; the largest sum of live host copies is recorded as
  `host_offload_bytes`. The loss is computed outside the offloading context (torchtune's
  recipes), from the model's logits with transformers' causal-LM loss. `--checkpointing on`
  measures it as torchtune's recipes require it, with activation checkpointing.
- `adamw-fused`: torch.optim.AdamW(fused=True) (runs on CPU in torch 2.15): no foreach
  temporaries.
"""
import argparse
import time
import weakref

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import _disable_current_modes

import measure_peak as mp

TECHNIQUES = ["loss-chunked", "loss-fused", "optimizer-in-backward", "activation-offload", "adamw-fused"]
CHUNKS = 8


def base_lm(model):
    """The transformers causal-LM under peft's wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shifted_labels(ids):
    """transformers' causal-LM shift, torchtune-style: label i is token i + 1, the last ignored."""
    return torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)


def chunked_loss(model, ids, tracker):
    lm = base_lm(model)
    hidden = lm.model(input_ids=ids).last_hidden_state
    # The projection of each chunk (MemTracker refuses a module called more than once per step).
    tracker.phase = "loss"
    head = lm.get_output_embeddings()
    # The hooks MemTracker's pre-forward hook gives a called module's parameters, which book the
    # head's summed weight gradient as a gradient once autograd hands it over (uncalled, the head
    # had none: its `.grad` stayed booked as the temporary it was made as).
    tracker._track_module_params_and_buffers(head, install_grad_hooks=True)
    weight = head.weight
    if torch.is_autocast_enabled("cpu"):
        # One cast for all chunks, as one lm_head call makes (autocast caches only the casts of
        # trained leaves: a frozen head would be cast once per chunk).
        weight = weight.to(torch.get_autocast_dtype("cpu"))
    logits = [F.linear(c, weight) for c in hidden.chunk(CHUNKS, dim=1)]
    del hidden
    labels = shifted_labels(ids)
    total = (labels != -100).sum()
    loss = 0.0
    for lg, lb in zip(logits, labels.chunk(CHUNKS, dim=1)):
        loss = loss + F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), lb.reshape(-1),
                                      reduction="sum", ignore_index=-100)
    del logits
    return loss / total


class FusedLinearCrossEntropy(torch.autograd.Function):
    """Liger-Kernel's `LigerFusedLinearCrossEntropyFunction` (reduction "mean", no bias, no
    softcap) in plain torch, allocation for allocation (see the module docstring)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu")
    def forward(ctx, x, weight, target):
        bt, h = x.shape
        v = weight.shape[0]
        inc_factor = -(-v // h)
        chunk = 1 << max(0, (-(-bt // inc_factor)) - 1).bit_length()  # next_power_of_2
        grad_input = torch.zeros_like(x)
        grad_weight = torch.zeros_like(weight) if weight.requires_grad else None
        loss_1d = torch.zeros(bt, dtype=torch.float32)
        target_mask = target != -100
        n = target_mask.sum().item()
        del target_mask
        for start in range(0, bt, chunk):
            end = min(start + chunk, bt)
            x_chunk = x[start:end]
            logits_chunk = x_chunk @ weight.t()  # the input dtype (autocast's under autocast)
            t_chunk = target[start:end]
            for r in range(end - start):
                # liger_cross_entropy_kernel: one program per row, fp32 in registers; the row's
                # loss into loss_1d and its gradient written over the logits, in place.
                t = int(t_chunk[r])
                if t == -100:
                    logits_chunk[r].zero_()
                    continue
                row = logits_chunk[r].float()
                lse = torch.logsumexp(row, dim=0)
                loss_1d[start + r] = (lse - row[t]) / n
                row.sub_(lse).exp_()
                row[t] -= 1.0
                row.div_(n)
                logits_chunk[r].copy_(row)
                del row, lse
            grad_input[start:end] = logits_chunk @ weight
            if grad_weight is not None:
                if torch.is_autocast_enabled("cpu") and grad_weight.dtype == torch.float32:
                    # CUDA (sm80+) path: torch.addmm(..., out_dtype=torch.float32,
                    # out=grad_weight) accumulates the bf16 product in place; CPU has no
                    # addmm.dtype_out, so one row's outer product at a time.
                    with torch.autocast("cpu", enabled=False):
                        for r in range(end - start):
                            grad_weight.addr_(logits_chunk[r].float(), x_chunk[r].float())
                else:
                    grad_weight += torch.mm(logits_chunk.t(), x_chunk).float()
            del logits_chunk
        loss = torch.sum(loss_1d)
        del loss_1d
        ctx.save_for_backward(grad_input.detach(),
                              grad_weight.detach() if grad_weight is not None else None)
        return loss

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_output):
        grad_input, grad_weight = ctx.saved_tensors
        # The loss is the last layer: grad_output is 1 and the saved gradients are returned as
        # they are; otherwise element_mul_kernel scales them in place.
        if not torch.equal(grad_output, torch.tensor(1.0)):
            grad_input.mul_(grad_output)
            if grad_weight is not None:
                grad_weight.mul_(grad_output)
        return grad_input, grad_weight, None


def fused_loss(model, ids, tracker):
    lm = base_lm(model)
    hidden = lm.model(input_ids=ids).last_hidden_state
    tracker.phase = "loss"
    weight = lm.get_output_embeddings().weight
    x = hidden.reshape(-1, hidden.shape[-1])
    return FusedLinearCrossEntropy.apply(x, weight, shifted_labels(ids).reshape(-1))


class Offload:
    """torchtune's OffloadActivations with `use_streams=False`: a saved tensor of at least
    `min_offload_size` (1024) bytes (`element_size() * nelement()`, a view's own elements) that is
    not a parameter or an `nn.Buffer` is copied to host memory when saved, each save on its own
    (views of one storage included), and copied back when the backward unpacks it. As
    `get_act_offloading_ctx_manager` does, the output head runs under a `NoOpManager`: its saved
    input stays on the device."""

    MIN_OFFLOAD_SIZE = 1024

    def __init__(self):
        self.host_live = 0
        self.host_peak = 0

    def _release(self, n):
        self.host_live -= n

    def pack(self, t):
        if (isinstance(t, (torch.nn.Parameter, torch.nn.Buffer))
                or t.element_size() * t.nelement() < self.MIN_OFFLOAD_SIZE):
            return ("kept", t)
        with _disable_current_modes():
            host = torch.empty_like(t, device="cpu")
            host.copy_(t)
        n = host.nbytes
        self.host_live += n
        self.host_peak = max(self.host_peak, self.host_live)
        weakref.finalize(host, self._release, n)
        return ("host", host)

    def unpack(self, packed):
        if packed[0] == "kept":
            return packed[1]
        return packed[1].clone()  # back on the device: tracked

    def __call__(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)

    def skip_output_head(self, head):
        """torchtune's NoOpManager around the output head (its saved input is not offloaded)."""
        noop = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
        return [head.register_forward_pre_hook(lambda *a: noop.__enter__()),
                head.register_forward_hook(lambda *a: noop.__exit__(None, None, None), always_call=True)]


def measure(name, regime, batch, seq, dtype_mode, attn, technique, checkpointing=False):
    family, cfg, model, lora = mp.build_model(name, regime, dtype_mode, attn, checkpointing)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    opts = []
    if technique == "optimizer-in-backward":
        per_param = {p: torch.optim.AdamW([p], lr=1e-3, foreach=True) for p in trainable}

        def hook(p):
            per_param[p].step()
            per_param[p].zero_grad(set_to_none=True)

        handles = [p.register_post_accumulate_grad_hook(hook) for p in trainable]
        opts = list(per_param.values())
    elif technique == "adamw-fused":
        opts = [torch.optim.AdamW(trainable, lr=1e-3, fused=True)]
    else:
        opts = [torch.optim.AdamW(trainable, lr=1e-3, foreach=True)]
    ids = torch.randint(0, cfg.vocab_size, (batch, seq))
    lm_head = model.get_output_embeddings()
    current = {}
    hook_handle = mp.loss_phase_hook(lm_head, current)
    offload = Offload() if technique == "activation-offload" else None
    head_hooks = offload.skip_output_head(lm_head) if offload else []
    host_peaks = {}
    autocast = dtype_mode != "fp32"

    def forward_loss(tracker):
        if technique == "loss-chunked":
            return chunked_loss(model, ids, tracker)
        if technique == "loss-fused":
            return fused_loss(model, ids, tracker)
        if offload:
            with offload():
                out = model(input_ids=ids)
            logits = out.logits
            del out
            loss = base_lm(model).loss_function(logits, ids, vocab_size=cfg.vocab_size)
            del logits
            return loss
        return mp.model_loss(model, ids)(tracker)

    def one_step(tracker, step):
        current["tracker"] = tracker
        if offload:
            offload.host_peak = offload.host_live
        mp.run_step(tracker, step, forward_loss, opts, autocast,
                    step_optimizers=technique != "optimizer-in-backward")
        if offload:
            host_peaks[step] = offload.host_peak

    try:
        peaks, boundaries = mp.tracked_steps((model, *opts, ids), one_step)
    finally:
        hook_handle.remove()
        for h in head_hooks:
            h.remove()
    steps = mp.step_records(peaks, boundaries)
    for step in host_peaks:
        steps[f"step{step}"]["host_offload_bytes"] = host_peaks[step]
    uniq = {p.untyped_storage().data_ptr(): p for p in params}
    state = sum(v.nbytes for o in opts for st in o.state.values() for k, v in st.items() if k != "step")
    step_bytes = sum(st["step"].nbytes for o in opts for st in o.state.values())
    optimizer = {"class": "torch.optim.AdamW", "foreach": technique != "adamw-fused",
                 "fused": technique == "adamw-fused", "per_parameter": technique == "optimizer-in-backward",
                 "state_bytes_excl_step": state, "step_bytes": step_bytes}
    return {
        "id": f"{name}|{regime}|b{batch}s{seq}|{dtype_mode}|{attn}|{technique}" + ("|ckpt" if checkpointing else ""),
        "model": name, "shape": mp.measure_shape(name, family, cfg),
        "regime": regime, "lora": lora, "dtype_mode": dtype_mode,
        "attn_implementation_requested": attn, "attn_implementation_used": model.config._attn_implementation,
        "batch": batch, "seq": seq, "gradient_checkpointing": checkpointing, "technique": technique,
        "optimizer": optimizer,
        "params": {"trainable_count": sum(p.numel() for p in trainable),
                   "trainable_bytes": sum(p.nbytes for p in trainable),
                   "frozen_bytes": sum(p.nbytes for p in uniq.values() if not p.requires_grad),
                   "total_bytes": sum(p.nbytes for p in uniq.values())},
        "peak": steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--regimes", nargs="+", default=["full", "lora-r8"])
    ap.add_argument("--shapes", nargs="+", default=["2x64", "4x128"], help="BATCHxSEQ")
    ap.add_argument("--dtype-modes", nargs="+", default=["fp32", "autocast-bf16"])
    ap.add_argument("--attn", nargs="+", default=["sdpa"])
    ap.add_argument("--checkpointing", nargs="+", default=["off"], choices=["off", "on"],
                    help="on: model.gradient_checkpointing_enable(), as torchtune requires with offloading")
    ap.add_argument("--techniques", nargs="+", default=TECHNIQUES, choices=TECHNIQUES)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    records, t0 = [], time.time()
    for tech in args.techniques:
        for m, reg, attn, dm, b, s, ckpt in mp.grid(args):
            r = measure(m, reg, b, s, dm, attn, tech, ckpt)
            records.append(r)
            mp.log_record(r, t0)
    mp.write_records(args.out, records)


if __name__ == "__main__":
    main()
