"""shims.py: what the records' scripts import from PyTorch 2.x and from CUDA-only packages,
written for Debian's torch 1.13 on the CPU, so that their model classes can be built and run there.

Only the functions the records' forward passes call are provided, each with the semantics the
record relies on (the CUDA kernels they stand for compute in fp32 or better):
  F.rms_norm(x, shape, weight=None, eps=None)  eps None -> fp32's epsilon (the records run it in
                                              bf16/fp32, where torch uses finfo(fp32).eps)
  F.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0, is_causal=False, scale=None,
                                 enable_gqa=False)           [B, H, T, D]
  flash_attn_interface.flash_attn_func(q, k, v, causal=...) [B, T, H, D], GQA by head groups
  torch.compile -> the function itself; torch._dynamo / torch._inductor config stubs.
"""
from __future__ import annotations

import math
import sys
import types

import torch
import torch.nn.functional as F

FLT_EPSILON = 1.1920928955078125e-07


def rms_norm(x, normalized_shape, weight=None, eps=None):
    dims = tuple(range(-len(normalized_shape), 0))
    e = FLT_EPSILON if eps is None else eps
    y = x * torch.rsqrt(x.pow(2).mean(dim=dims, keepdim=True) + e)
    return y * weight if weight is not None else y


def _attend(q, k, v, causal, scale):
    """q [B, H, T, D], k/v [B, Hk, S, D] with H a multiple of Hk (query head h reads kv h // (H/Hk))."""
    H, Hk = q.shape[1], k.shape[1]
    if H != Hk:
        k = k.repeat_interleave(H // Hk, dim=1)
        v = v.repeat_interleave(H // Hk, dim=1)
    s = torch.matmul(q, k.transpose(-1, -2)) * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    if causal:
        T, S = q.shape[2], k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool).triu(S - T + 1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                                 enable_gqa=False):
    if attn_mask is not None or dropout_p != 0.0:
        raise NotImplementedError("xcheck shim: attn_mask/dropout not used by the records")
    if q.shape[1] != k.shape[1] and not enable_gqa:
        raise ValueError("xcheck shim: GQA shapes without enable_gqa")
    return _attend(q, k, v, is_causal, scale)


def flash_attn_func(q, k, v, softmax_scale=None, causal=False, *args, **kwargs):
    y = _attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal, softmax_scale)
    return y.transpose(1, 2)


def install() -> None:
    F.rms_norm = rms_norm
    F.scaled_dot_product_attention = scaled_dot_product_attention
    torch.compile = lambda fn=None, *a, **k: (fn if fn is not None else (lambda f: f))
    for name in ("flash_attn_interface", "flash_attn"):
        m = types.ModuleType(name)
        m.flash_attn_func = flash_attn_func
        sys.modules.setdefault(name, m)
    cfg = types.SimpleNamespace(optimize_ddp=False, cache_size_limit=8, suppress_errors=False,
                                recompile_limit=8, coordinate_descent_tuning=False)
    for name in ("torch._dynamo", "torch._inductor"):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.config = cfg
            m.reset = lambda: None
            sys.modules[name] = m
            setattr(torch, name.split(".")[1], m)
    att = types.ModuleType("torch.nn.attention")

    class SDPBackend:  # names only
        FLASH_ATTENTION = EFFICIENT_ATTENTION = MATH = CUDNN_ATTENTION = 0

    att.SDPBackend = SDPBackend
    att.sdpa_kernel = lambda *a, **k: __import__("contextlib").nullcontext()
    sys.modules.setdefault("torch.nn.attention", att)
