"""ref_gptq.py: PyTorch reference of the export quantisation of PR #1311, PR #1392 and PR #187, written
from the spec (shared/spec/pr1311-pr1392-pr187.md §2.8, §3.8 item 6, §4.9), independently of pgolf's C
and of tests/reference/ref_export.py. Everything runs in float32 on the CPU as the records run it.

- GPTQ-lite (PR #1311, §2.8 item 3): for p in {0.999, 0.9995, 0.9999, 0.99999, 1.0}: per-row clip
  c_r = quantile(|W_r|, p) (the row max for p = 1), s_r = fp16(max(c_r/31, 1/31)),
  q = clamp(round(W/s_r), -31, 31); error = mean over the whole matrix of (W - q*s)^2; the first p
  with the lowest error wins.
- full GPTQ (PR #1392, §3.8 item 6): dead columns (diag H == 0) get H_cc = 1, then
  H += damp*mean(diag H)*I; columns in descending diag-H order (stable argsort); W's dead columns
  zeroed; U = upper Cholesky factor of H^-1 (cholesky, cholesky_inverse, cholesky upper); per p the
  scales of the unpermuted W as above, then blocks of `block` columns: each column quantised,
  its error divided by U_cc, the rest of the block updated, the block's errors propagated lazily to
  the later columns with one matmul; score = unweighted mean((W_perm - q*s)^2); codes un-permuted.
- the routing of PR #1311 / #1392 (§2.8 item 2, §3.8 item 5): float tensors of <= 65,536 elements
  fp16 (before the control-name check), large control tensors fp32, `.attn.`/`.proj.`/`.mlp.`
  matrices int6 (GPTQ-lite; full GPTQ for PR #1392 where a Hessian is given), the rest int8 per row
  with the 99.99984 % quantile clip (scale max(c/127, 1/127), stored fp16).
- PR #187 (§4.9): float tensors of > 65,536 elements other than tok_emb.weight: int6 per row with the
  99.99984 % quantile clip (clamp W to +-c_r, scale max(c_r/31, 1/31) in fp32 for quantising, stored
  fp16; codes +-31); non-2-D ones per tensor (scale clip/31 or 1, fp32); the rest kept: fp32 for the
  control names, fp16 for fp32/bf16 tensors, other dtypes as they are.

CLI (the C tests, tests/test_gptq.c):
  ref_gptq.py lite IN OUT            every 2-D tensor NAME of IN: NAME.q (int8), NAME.s (fp16), NAME.p (int64 index)
  ref_gptq.py gptq IN OUT DAMP BLOCK pairs W.NAME / H.NAME of IN: NAME.q, NAME.s, NAME.p
  ref_gptq.py SCHEME IN OUT CONTROL [DAMP BLOCK]
                                     SCHEME pr1311, pr1392 or pr187: the state dict of IN (Hessians
                                     H.NAME for pr1392), NAME.q + NAME.s or NAME.pass, and NAME.deq
"""
from __future__ import annotations

import sys
from typing import Dict, Tuple

import torch

PCTS = (0.999, 0.9995, 0.9999, 0.99999, 1.0)
CLIP_Q = 0.9999984
SMALL = 65536


def pct_scales(w: torch.Tensor, p: float) -> torch.Tensor:
    a = w.abs()
    c = a.amax(dim=1) if p >= 1.0 else torch.quantile(a, p, dim=1)
    return (c / 31).clamp_min(1.0 / 31).to(torch.float16)


def gptq_lite(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, int]:
    w = w.float()
    best = None
    for k, p in enumerate(PCTS):
        s = pct_scales(w, p)
        sf = s.float()[:, None]
        q = torch.clamp(torch.round(w / sf), -31, 31)
        err = (w - q * sf).pow(2).double().mean().item()  # squared in fp32, summed in double
        if best is None or err < best[0]:
            best = (err, q.to(torch.int8), s, k)
    return best[1], best[2], best[3]


def gptq_full(w: torch.Tensor, h: torch.Tensor, damp: float, block: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
    w = w.float()
    R, C = w.shape
    H = h.float().clone()
    diag = torch.diagonal(H)
    dead = diag == 0
    for c in torch.nonzero(dead).flatten().tolist():
        H[c, c] = 1.0
    d = torch.diagonal(H)
    d += damp * d.mean()
    order = torch.argsort(torch.diagonal(H), descending=True, stable=True)
    undo = torch.argsort(order)
    Wp = w[:, order].clone()
    Wp[:, dead[order]] = 0.0
    Hp = H[order][:, order]
    L = torch.linalg.cholesky(Hp)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)
    best = None
    for k, p in enumerate(PCTS):
        s = pct_scales(w, p)  # from the unpermuted weights
        sf = s.float()
        work = Wp.clone()
        Q = torch.empty(R, C)
        for b in range(0, C, block):
            e = min(b + block, C)
            blk = work[:, b:e].clone()
            errs = torch.empty(R, e - b)
            for j in range(e - b):
                col = blk[:, j]
                qc = torch.clamp(torch.round(col / sf), -31, 31)
                Q[:, b + j] = qc
                ec = (col - qc * sf) / U[b + j, b + j]
                errs[:, j] = ec
                blk[:, j:] -= ec[:, None] * U[b + j, b + j:e][None, :]
            if e < C:
                work[:, e:] -= errs @ U[b:e, e:]
        score = (Wp - Q * sf[:, None]).pow(2).double().mean().item()
        if best is None or score < best[0]:
            best = (score, Q, s, k)
    return best[1][:, undo].to(torch.int8).contiguous(), best[2], best[3]


def _keep(t: torch.Tensor, fp32: bool, fp16_any: bool) -> Dict[str, torch.Tensor]:
    """passthrough: fp32 (control), fp16 (every float dtype when fp16_any, as PR #1311/#1392 cast with
    t.to(float16); else only fp32/bf16, as the baseline's keep_float_tensor), or as it is"""
    if fp32:
        kept = t.float()
    elif fp16_any or t.dtype in (torch.float32, torch.bfloat16):
        kept = t.to(torch.float16)
    else:
        kept = t
    return {"pass": kept, "deq": kept.to(t.dtype)}


def _rows_clip(w: torch.Tensor, qmax: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """per-row quantile clip (baseline int8 with qmax 127, PR #187 int6 with 31): codes, stored fp16
    scales, dequantised fp32"""
    c = torch.quantile(w.abs(), CLIP_Q, dim=1)
    wc = torch.maximum(torch.minimum(w, c[:, None]), -c[:, None])
    sc = (c / float(qmax)).clamp_min(1.0 / qmax)
    q = torch.clamp(torch.round(wc / sc[:, None]), -qmax, qmax).to(torch.int8)
    s = sc.to(torch.float16)
    return q, s, q.float() * s.float()[:, None]


def _tensor_clip(w: torch.Tensor, qmax: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = float(torch.quantile(w.abs().flatten(), CLIP_Q))
    s = torch.tensor(c / float(qmax) if c > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(w, -c, c) / s), -qmax, qmax).to(torch.int8)
    return q, s, q.float() * s


def _category_int6(name: str) -> bool:
    """PR #1311/#1392 `.attn.`/`.proj.`/`.mlp.` matrices (tok_emb and lm_head are embeddings)"""
    if "tok_emb" in name or "lm_head" in name:
        return False
    return ".mlp." in name or ".attn." in name or ".proj." in name


def quantize_state(tensors: Dict[str, torch.Tensor], scheme: str, control: Tuple[str, ...],
                   hessians: Dict[str, torch.Tensor], damp: float, block: int) -> Dict[str, Dict[str, torch.Tensor]]:
    out: Dict[str, Dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            out[name] = {"pass": t, "deq": t}
            continue
        w = t.float()
        big = t.numel() > SMALL
        if scheme == "pr187":  # §4.9
            if not big or "tok_emb.weight" in name:
                out[name] = _keep(t, any(c in name for c in control), False)
                continue
            q, s, deq = _rows_clip(w, 31) if w.ndim == 2 else _tensor_clip(w, 31)
        else:  # pr1311 §2.8, pr1392 §3.8 item 5
            if not big:  # before the control-name check
                out[name] = _keep(t, False, True)
                continue
            if any(c in name for c in control):
                out[name] = _keep(t, True, True)
                continue
            if _category_int6(name):
                if w.ndim == 2:
                    if scheme == "pr1392" and name in hessians:
                        q, s, _ = gptq_full(w, hessians[name], damp, block)
                    else:
                        q, s, _ = gptq_lite(w)
                    deq = q.float() * s.float()[:, None]
                else:
                    amax = float(w.abs().max())
                    s = torch.tensor(amax / 31.0 if amax > 0 else 1.0, dtype=torch.float16)
                    q = torch.clamp(torch.round(w / s.float()), -31, 31).to(torch.int8)
                    deq = q.float() * s.float()
            else:
                q, s, deq = _rows_clip(w, 127) if w.ndim == 2 else _tensor_clip(w, 127)
        out[name] = {"q": q, "s": s.reshape(-1), "deq": deq.to(t.dtype)}
    return out


def main() -> None:
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from ref_io import load_safetensors, save_safetensors

    torch.set_num_threads(1)
    mode, inp, outp = sys.argv[1], sys.argv[2], sys.argv[3]
    tensors, _ = load_safetensors(inp)
    out: Dict[str, torch.Tensor] = {}
    if mode == "lite":
        for name, t in tensors.items():
            q, s, k = gptq_lite(t)
            out[name + ".q"], out[name + ".s"], out[name + ".p"] = q, s, torch.tensor([k])
    elif mode == "gptq":
        damp, block = float(sys.argv[4]), int(sys.argv[5])
        for name, t in tensors.items():
            if not name.startswith("W."):
                continue
            base = name[2:]
            q, s, k = gptq_full(t, tensors["H." + base], damp, block)
            out[base + ".q"], out[base + ".s"], out[base + ".p"] = q, s, torch.tensor([k])
    elif mode in ("pr1311", "pr1392", "pr187"):
        control = tuple(c for c in sys.argv[4].split(",") if c)
        damp, block = (float(sys.argv[5]), int(sys.argv[6])) if len(sys.argv) > 6 else (0.01, 128)
        hess = {n[2:]: t for n, t in tensors.items() if n.startswith("H.")}
        sd = {n: t for n, t in tensors.items() if not n.startswith("H.")}
        for name, r in quantize_state(sd, mode, control, hess, damp, block).items():
            for k, v in r.items():
                out[name + "." + k] = v.contiguous()
    else:
        raise SystemExit(f"unknown mode {mode}")
    save_safetensors(outp, out)


if __name__ == "__main__":
    main()
