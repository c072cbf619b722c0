"""ref_export.py: the records' post-training quantisation schemes (quantise + dequantise), from the specs.

Schemes (all arithmetic in fp32 on the fp32-cast weights, round half to even, fp16 per-row scales):
- int8_baseline  (baseline-pr65-pr453.md §2.9): per-row int8, 99.99984 % quantile clip, scale
  max(clip/127, 1/127); quantised with the fp32 scale, dequantised with the fp16 one; tensors with
  <= 65,536 elements kept (fp32 if a control name, else fp16).
- int6_pr65      (§3.6): as int8_baseline for small tensors; names containing tok_emb / bigram_hash kept
  fp16; other 2-D tensors int6 per row (quantile clip, floor 1/31, fp32 scale for quantising).
- int6_pr315     (§4.7, also PR453 and its loop gate §6.2): <= 65,536 elements -> fp16; attn/mlp ->
  int6 per row with the row max (no clip), scale fp16(max(rmax/31, 1/31)) used for quantising, clamp
  [-32, 31]; everything else int8 as in the baseline.
- int6_gptq_lite (second spec §2.8, PR1311): routing as int6_pr315; attn/mlp -> one clip percentile per
  matrix from {0.999, 0.9995, 0.9999, 0.99999, 1.0} minimising the plain MSE, clamp +-31.
- int6_gptq      (second spec §3.8, PR1392): as int6_gptq_lite, but attn/mlp matrices with a Hessian get
  full GPTQ (damping, act-order, upper Cholesky of H^-1, blocks of 128, same percentile search).
- int6_pr187     (second spec §4.9): <= 65,536 elements and tok_emb kept (fp32 control / fp16);
  everything else int6 per row with the quantile clip and floor 1/31.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from ref_config import BASE_CONTROL
from ref_model import QUANT_Q


def quantile_rows(a: torch.Tensor, q: float) -> torch.Tensor:
    """The records call torch.quantile itself (train_gpt.py quantize_float_tensor); so does this reference."""
    return torch.quantile(a, q, dim=-1)

KEEP_MAX_NUMEL = 65536
GPTQ_PERCENTILES = (0.999, 0.9995, 0.9999, 0.99999, 1.0)

SCHEME_ALIASES = {
    "baseline": "int8_baseline", "pr65": "int6_pr65", "pr315": "int6_pr315", "pr453": "int6_pr315",
    "pr1311": "int6_gptq_lite", "pr1392": "int6_gptq", "pr187": "int6_pr187",
}
SCHEMES = ("int8_baseline", "int6_pr65", "int6_pr315", "int6_gptq_lite", "int6_gptq", "int6_pr187")
DEFAULT_CONTROL = {
    "int8_baseline": BASE_CONTROL, "int6_pr65": BASE_CONTROL, "int6_pr187": BASE_CONTROL,
    "int6_pr315": BASE_CONTROL + ",smear,backout_lambda,adapter_scale,loop_repeat_embed",
    "int6_gptq_lite": "attn_scale,mlp_scale,resid_mix,q_gain,skip_weight,smear,attn_gate,vr_lambda,ve_layer_scales,ve_shared.scale",
    "int6_gptq": BASE_CONTROL + ",smear,dtg_gate,ve_layer_scales,ve_shared.scale,attn_gate,vr_lambda",
}


@dataclass
class QTensor:
    kind: str  # passthrough_fp32 | passthrough_fp16 | passthrough | int8 | int6
    deq: torch.Tensor  # dequantised, in the original dtype
    q: Optional[torch.Tensor] = None  # int8 codes
    scale: Optional[torch.Tensor] = None  # fp16 per row (or a 0-d scale)
    stored: Optional[torch.Tensor] = None  # passthrough as stored (fp16 / fp32 / as is)

    def payload_bytes(self) -> int:
        if self.q is not None:
            return self.q.numel() * self.q.element_size() + self.scale.numel() * self.scale.element_size()
        return self.stored.numel() * self.stored.element_size()


def _per_row_int8(t32: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Baseline int8 (§2.9 steps 1-5). Returns codes, stored scale, the scale used to dequantise (fp32)."""
    if t32.ndim == 2:
        clip = quantile_rows(t32.abs(), QUANT_Q) if t32.numel() else torch.zeros(t32.shape[0])
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / 127.0).clamp_min(1.0 / 127.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -127, 127).to(torch.int8)
        s16 = scale.to(torch.float16)
        return q, s16, s16.float()[:, None]
    clip = float(quantile_rows(t32.abs().flatten(), QUANT_Q)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 127.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -127, 127).to(torch.int8)
    return q, scale, scale


def _per_row_int6_quantile(t32: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PR65 / PR187 int6: quantile clip, scale max(clip/31, 1/31) in fp32 for quantising, fp16 stored."""
    if t32.ndim == 2:
        clip = quantile_rows(t32.abs(), QUANT_Q)
        clipped = torch.maximum(torch.minimum(t32, clip[:, None]), -clip[:, None])
        scale = (clip / 31.0).clamp_min(1.0 / 31.0)
        q = torch.clamp(torch.round(clipped / scale[:, None]), -31, 31).to(torch.int8)
        s16 = scale.to(torch.float16)
        return q, s16, s16.float()[:, None]
    clip = float(quantile_rows(t32.abs().flatten(), QUANT_Q)) if t32.numel() else 0.0
    scale = torch.tensor(clip / 31.0 if clip > 0 else 1.0, dtype=torch.float32)
    q = torch.clamp(torch.round(torch.clamp(t32, -clip, clip) / scale), -31, 31).to(torch.int8)
    return q, scale, scale


def _per_row_int6_rowmax(t32: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PR315 int6 (§4.7 item 3.3): fp16(max(rmax/31, 1/31)), quantised with that fp16 scale, clamp [-32, 31]."""
    if t32.ndim == 2:
        s16 = (t32.abs().amax(dim=1) / 31.0).clamp_min(1.0 / 31.0).to(torch.float16)
        q = torch.clamp(torch.round(t32 / s16.float()[:, None]), -32, 31).to(torch.int8)
        return q, s16, s16.float()[:, None]
    amax = float(t32.abs().max()) if t32.numel() else 0.0
    s16 = torch.tensor(amax / 31.0 if amax > 0 else 1.0, dtype=torch.float16)
    q = torch.clamp(torch.round(t32 / s16.float()), -32, 31).to(torch.int8)
    return q, s16, s16.float()


def _percentile_scales(t32: torch.Tensor, p: float) -> torch.Tensor:
    rc = quantile_rows(t32.abs(), p) if p < 1.0 else t32.abs().amax(dim=1)
    return (rc / 31.0).clamp_min(1.0 / 31.0).to(torch.float16)


def _int6_search(t32: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PR1311 GPTQ-lite (second spec §2.8 item 3): one percentile per matrix, lowest mean squared error."""
    if t32.ndim != 2:
        amax = float(t32.abs().max()) if t32.numel() else 0.0
        s16 = torch.tensor(amax / 31.0 if amax > 0 else 1.0, dtype=torch.float16)
        q = torch.clamp(torch.round(t32 / s16.float()), -31, 31).to(torch.int8)
        return q, s16, s16.float()
    best = None
    best_err = float("inf")
    for p in GPTQ_PERCENTILES:
        s16 = _percentile_scales(t32, p)
        q = torch.clamp(torch.round(t32 / s16.float()[:, None]), -31, 31).to(torch.int8)
        err = float((t32 - q.float() * s16.float()[:, None]).pow(2).mean())
        if err < best_err:
            best, best_err = (q, s16), err
    q, s16 = best
    return q, s16, s16.float()[:, None]


def gptq_int6(w: torch.Tensor, hessian: torch.Tensor, damp: float, block: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Full GPTQ int6 of PR1392 (second spec §3.8 item 6). w [R, C] fp32, hessian [C, C]."""
    R, C = w.shape
    H = hessian.float().clone()
    dead = torch.diagonal(H) == 0
    idx = torch.nonzero(dead).flatten()
    H[idx, idx] = 1.0
    H[torch.arange(C), torch.arange(C)] += damp * torch.mean(torch.diagonal(H))
    perm = torch.sort(torch.diagonal(H), descending=True, stable=True).indices
    inv = torch.argsort(perm)
    Wp = w[:, perm].clone()
    Wp[:, dead[perm]] = 0
    H = H[perm][:, perm]
    U = torch.linalg.cholesky(H)
    U = torch.cholesky_inverse(U)
    U = torch.linalg.cholesky(U, upper=True)
    best = None
    best_err = float("inf")
    for p in GPTQ_PERCENTILES:
        s16 = _percentile_scales(w, p)  # on the unpermuted weights
        sf = s16.float()
        Q = torch.zeros(R, C, dtype=torch.int8)
        Wc = Wp.clone()
        for b in range(0, C, block):
            e = min(b + block, C)
            n = e - b
            W1 = Wc[:, b:e].clone()
            E1 = torch.zeros(R, n)
            Hb = U[b:e, b:e]
            for c in range(n):
                col = W1[:, c]
                qc = torch.clamp(torch.round(col / sf), -31, 31)
                Q[:, b + c] = qc.to(torch.int8)
                err = (col - qc * sf) / Hb[c, c]
                W1[:, c:] -= err.unsqueeze(1) * Hb[c, c:].unsqueeze(0)
                E1[:, c] = err
            if e < C:
                Wc[:, e:] -= E1 @ U[b:e, e:]
        mse = float((Wp - Q.float() * sf[:, None]).pow(2).mean())
        if mse < best_err:
            best, best_err = (Q, s16), mse
    Q, s16 = best
    return Q[:, inv].contiguous(), s16


def category(name: str) -> str:
    """PR315 `_classify_param` (§4.7 item 2)."""
    if "tok_emb" in name or "lm_head" in name:
        return "embed"
    if ".mlp." in name:
        return "mlp"
    if ".attn." in name or (".proj." in name and ".mlp." not in name):
        return "attn"
    return "other"


def unbank(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """PR1311/1392 export step 1: banks -> per-layer matrices (L inferred from mlp_up_bank)."""
    if "mlp_up_bank" not in tensors:
        return dict(tensors)
    L = tensors["mlp_up_bank"].shape[0]
    out: Dict[str, torch.Tensor] = {}
    for n, t in tensors.items():
        if n == "qo_bank":
            for i in range(L):
                out[f"blocks.{i}.attn.c_q.weight"] = t[i]
                out[f"blocks.{i}.attn.proj.weight"] = t[L + i]
        elif n == "kv_bank":
            for i in range(L):
                out[f"blocks.{i}.attn.c_k.weight"] = t[i]
                out[f"blocks.{i}.attn.c_v.weight"] = t[L + i]
        elif n == "mlp_up_bank":
            for i in range(L):
                out[f"blocks.{i}.mlp.fc.weight"] = t[i]
        elif n == "mlp_down_bank":
            for i in range(L):
                out[f"blocks.{i}.mlp.proj.weight"] = t[i]
        else:
            out[n] = t
    return out


def _passthrough(t: torch.Tensor, fp32: bool, keep_other: bool = False) -> QTensor:
    """keep_other: train_gpt.py keep_float_tensor, which casts only fp32/bf16 to fp16 and keeps fp16/fp64."""
    if not t.is_floating_point():
        return QTensor("passthrough", t, stored=t)
    if fp32:
        s = t.float()
        return QTensor("passthrough_fp32", s.to(t.dtype), stored=s)
    if keep_other and t.dtype not in (torch.float32, torch.bfloat16):
        return QTensor("passthrough", t, stored=t)
    s = t.to(torch.float16)
    return QTensor("passthrough_fp16", s.to(t.dtype), stored=s)


def _quantised(kind: str, t: torch.Tensor, q: torch.Tensor, stored: torch.Tensor, sdeq: torch.Tensor) -> QTensor:
    return QTensor(kind, (q.float() * sdeq).to(t.dtype), q=q, scale=stored)


@dataclass
class ExportOptions:
    control: Tuple[str, ...] = ()
    keep_fp32: Tuple[str, ...] = ()
    fp16_passthrough: Tuple[str, ...] = ("tok_emb", "bigram_hash")
    hessians: Dict[str, torch.Tensor] = field(default_factory=dict)
    gptq_damp: float = 0.01
    gptq_block: int = 128


def quantize_state(tensors: Dict[str, torch.Tensor], scheme: str, opt: ExportOptions) -> Dict[str, QTensor]:
    scheme = SCHEME_ALIASES.get(scheme, scheme)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; one of {SCHEMES}")
    control = opt.control or tuple(p for p in DEFAULT_CONTROL[scheme].split(",") if p)
    keep_fp32 = opt.keep_fp32 or control
    out: Dict[str, QTensor] = {}
    for name, t in unbank(tensors).items():
        t = t.detach().contiguous()
        if not t.is_floating_point():
            out[name] = _passthrough(t, False)
            continue
        t32 = t.float()
        big = t.numel() > KEEP_MAX_NUMEL
        if scheme in ("int8_baseline", "int6_pr65", "int6_pr187"):
            if not big or (scheme == "int6_pr187" and "tok_emb.weight" in name):
                out[name] = _passthrough(t, any(p in name for p in keep_fp32), keep_other=True)
            elif scheme == "int6_pr65" and any(p in name for p in opt.fp16_passthrough):
                out[name] = _passthrough(t, False)
            elif scheme == "int8_baseline" or (scheme == "int6_pr65" and t.ndim != 2):
                out[name] = _quantised("int8", t, *_per_row_int8(t32))
            else:
                out[name] = _quantised("int6", t, *_per_row_int6_quantile(t32))
            continue
        # PR315 / PR1311 / PR1392 mixed export
        if not big:
            out[name] = _passthrough(t, False)
        elif any(p in name for p in control):
            out[name] = _passthrough(t, True)
        elif category(name) in ("mlp", "attn"):
            if scheme == "int6_pr315":
                out[name] = _quantised("int6", t, *_per_row_int6_rowmax(t32))
            elif scheme == "int6_gptq" and name in opt.hessians and t.ndim == 2:
                q, s16 = gptq_int6(t32, opt.hessians[name], opt.gptq_damp, opt.gptq_block)
                out[name] = _quantised("int6", t, q, s16, s16.float()[:, None])
            else:
                out[name] = _quantised("int6", t, *_int6_search(t32))
        else:
            out[name] = _quantised("int8", t, *_per_row_int8(t32))
    return out


def payload_bytes(qs: Dict[str, QTensor]) -> int:
    """Sum of int8 codes + scales + passthrough bytes, as the records' `payload` (§2.9)."""
    return sum(q.payload_bytes() for q in qs.values())


def main() -> None:
    """CLI for the C tests: quantise every tensor of IN.safetensors with SCHEME and write OUT.safetensors
    holding, per tensor NAME, `NAME.q` + `NAME.scale` (quantised) or `NAME.pass` (passthrough as stored)
    and `NAME.deq` (dequantised, original dtype); metadata: kind per tensor and the payload bytes."""
    import argparse
    import sys

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from ref_io import load_safetensors, save_safetensors

    ap = argparse.ArgumentParser()
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--scheme", default="int8_baseline")
    ap.add_argument("--control", default="")
    a = ap.parse_args()
    tensors, _ = load_safetensors(a.inp)
    opt = ExportOptions(control=tuple(p for p in a.control.split(",") if p))
    qs = quantize_state(tensors, a.scheme, opt)
    out: Dict[str, torch.Tensor] = {}
    meta: Dict[str, str] = {"payload_bytes": str(payload_bytes(qs))}
    for name, q in qs.items():
        meta["kind." + name] = q.kind
        out[name + ".deq"] = q.deq.contiguous()
        if q.q is not None:
            out[name + ".q"] = q.q.contiguous()
            out[name + ".scale"] = q.scale.reshape(-1).contiguous()
        else:
            out[name + ".pass"] = q.stored.contiguous()
    save_safetensors(a.out, out, meta)


if __name__ == "__main__":
    main()
