#!/usr/bin/python3
"""xcheck_export.py: the reference quantisers (ref_export.py, which pgolf's export is held to bit
for bit) against a record's own export functions, on the CPU.

    /usr/bin/python3 tests/reference/xcheck_export.py NAME RECORD_SCRIPT [--seed S] [--layers L]

NAME: baseline, pr65, pr315, pr453, pr1311, pr1392, pr187 (PR #1392: full GPTQ with the same random
Hessians on both sides for all but one attn/mlp matrix; the record's act-order argsort is made stable,
as the reference's, unless --unstable-ties: with 2,048 columns fp32 diagonals can tie, and the
record's order of ties is its sort implementation's). RECORD_SCRIPT: the record's train_gpt.py (scripts/record_refs.sh writes them into
a git-ignored folder). The state dict has the preset's names and shapes at full width with L layers
(default 2), heavy-tailed random values (so the quantile clips and percentile searches matter), the
embeddings in bf16 and the rest in fp32 as the records' state dicts; after unbanking (ref_export.unbank)
the same tensors go through the record's quantise + dequantise and through ref_export.quantize_state.
Every dequantised tensor must be bit-identical (same dtype, same bits).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Dict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ref_config import KEYS, load_config  # noqa: E402
from ref_export import ExportOptions, quantize_state, unbank  # noqa: E402
from ref_model import param_table  # noqa: E402
from xcheck import import_record, read_env_file, ROOT  # noqa: E402

Sd = Dict[str, torch.Tensor]


def _int8(mod, sd: Sd) -> Sd:
    obj, _ = mod.quantize_state_dict_int8(sd)
    return mod.dequantize_state_dict_int8(obj)


def _mixed(mod, sd: Sd) -> Sd:
    r, m = mod.mixed_quantize_int6(sd, {"mlp", "attn"})
    return mod.dequantize_mixed_int6(r, m, sd)


def _pr1311(mod, sd: Sd) -> Sd:
    r, m = mod.mq6(sd, {"mlp", "attn"})
    return mod.dq6(r, m, sd)


def _pr1392(mod, sd: Sd, hessians: Sd) -> Sd:
    r, m = mod.mixed_quantize_int6(sd, {"mlp", "attn"}, hessians=hessians)
    return mod.dequantize_mixed_int6(r, m, sd)


def _pr187(mod, sd: Sd) -> Sd:
    obj, _ = mod.quantize_state_dict_int6(sd)
    return mod.dequantize_state_dict_int8(obj)


# name -> (preset file or None, the ref_export scheme, the record's quantise + dequantise)
RECORDS: Dict[str, tuple] = {
    "baseline": (None, "int8_baseline", _int8),
    "pr65": ("configs/pr65.env", "int6_pr65", _int8),
    "pr315": ("configs/pr315.env", "int6_pr315", _mixed),
    "pr453": ("configs/pr453.env", "int6_pr315", _mixed),
    "pr1311": ("configs/pr1311.env", "int6_gptq_lite", _pr1311),
    "pr187": ("configs/pr187.env", "int6_pr187", _pr187),
    "pr1392": ("configs/pr1392.env", "int6_gptq", _pr1392),
}


def hessians(sd: Sd, gen: torch.Generator) -> Sd:
    """PR #1392's GPTQ inputs: for all but the last attn/mlp matrix (which then takes the percentile
    search), X^T X of 4*cols correlated random rows (some columns dead, as real activations)."""
    out: Sd = {}
    names = [n for n in sorted(sd) if sd[n].ndim == 2 and sd[n].numel() > 65536 and (".attn." in n or ".mlp." in n)]
    for n in names[:-1]:
        cols = sd[n].shape[1]
        x = torch.randn(4 * cols, cols, generator=gen) @ (torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=gen) / cols ** 0.5)
        x[:, :3] = 0.0
        out[n] = (x.t() @ x).float()
    return out


def state_dict(cfg, gen: torch.Generator) -> Sd:
    sd: Sd = {}
    for s in param_table(cfg):
        shape = tuple(s.shape)
        r = torch.randn(shape, generator=gen) * torch.exp(0.7 * torch.randn(shape, generator=gen))
        if len(shape) == 2 and ("emb" in s.name or "embed" in s.name) and not s.linear:  # nn.Embedding: bf16
            sd[s.name] = (0.05 * r).bfloat16()
        elif len(shape) == 2:
            sd[s.name] = r / shape[1] ** 0.5
        else:
            sd[s.name] = 1.0 + 0.3 * r
    return unbank(sd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("name", choices=sorted(RECORDS))
    ap.add_argument("record")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--unstable-ties", action="store_true",
                    help="PR #1392: keep the record's unstable argsort (its order of tied Hessian diagonals)")
    a = ap.parse_args()
    preset, scheme, record_fn = RECORDS[a.name]
    env: Dict[str, str] = read_env_file(os.path.join(ROOT, preset)) if preset else {}
    env["NUM_LAYERS"] = str(a.layers)
    last2 = ",".join(str(i) for i in range(max(0, a.layers - 2), a.layers))
    for k in ("VE_LAYERS", "RECUR_LAYERS"):  # the full depth's layer lists -> this one's last layers
        if k in env:
            env[k] = last2
    if "PARALLEL_START_LAYER" in env:
        env["PARALLEL_START_LAYER"] = str(a.layers - 1)
    if "XSA_LAST_N" in env:
        env["XSA_LAST_N"] = str(min(int(env["XSA_LAST_N"]), a.layers))
    cfg = load_config(None, {k: v for k, v in env.items() if k in KEYS})
    mod = import_record(a.record, env)
    gen = torch.Generator().manual_seed(a.seed)
    sd = state_dict(cfg, gen)
    opt = ExportOptions()
    if a.name == "pr1392" and not a.unstable_ties:
        # GPTQ's act-order is argsort(diag H, descending) without stable=True; fp32 diagonals tie now
        # and then, and the order of ties is whatever the sort implementation gives (torch 2.x: x86-simd-
        # sort on the CPU). The reference and pgolf break ties by column index (docs/seeds.md).
        torch_argsort = torch.argsort
        mod.torch.argsort = lambda x, dim=-1, descending=False, stable=True: torch.sort(
            x, dim=dim, descending=descending, stable=True).indices
    if a.name == "pr1392":
        opt.hessians = hessians(sd, gen)
        rec: Sd = record_fn(mod, {k: v.clone() for k, v in sd.items()}, {k: v.clone() for k, v in opt.hessians.items()})
    else:
        rec = record_fn(mod, {k: v.clone() for k, v in sd.items()})
    if a.name == "pr1392" and not a.unstable_ties:
        mod.torch.argsort = torch_argsort
    ref = {k: q.deq for k, q in quantize_state({k: v.clone() for k, v in sd.items()}, scheme, opt).items()}
    if set(rec) != set(ref):
        print(f"xcheck_export {a.name}: tensor names differ: record only {sorted(set(rec) - set(ref))[:8]}, "
              f"reference only {sorted(set(ref) - set(rec))[:8]}")
        return 1
    bad = 0
    for n in sorted(sd):
        x, y = rec[n], ref[n]
        same = x.dtype == y.dtype and x.shape == y.shape and torch.equal(x.view(-1), y.view(-1))
        if not same:
            bad += 1
            diff = (x.float() - y.float()).abs().max().item() if x.shape == y.shape else float("nan")
            print(f"  {n:40s} {tuple(sd[n].shape)} {sd[n].dtype}: record {x.dtype}, reference {y.dtype}, "
                  f"max |diff| {diff:.3e}  MISMATCH")
        elif os.environ.get("XCHECK_VERBOSE"):
            print(f"  {n:40s} {tuple(sd[n].shape)} {str(sd[n].dtype):15s} -> {x.dtype}: identical")
    quantised = sum(1 for n in sd if sd[n].numel() > 65536)
    print(f"xcheck_export {a.name}: {'ok' if not bad else 'FAIL'}: scheme {scheme}, {len(sd)} tensors "
          f"({quantised} over 65,536 elements), {len(sd) - bad} bit-identical, {bad} differ")
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
