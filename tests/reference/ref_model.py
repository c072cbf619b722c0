"""ref_model.py: the reference GPT of the baseline and the five records, written from the specs.

Everything runs in one working dtype (float64 by default, or float32); there is no bf16 autocast. The
only bf16 values are the RoPE cos/sin tables, which reproduce the records' table values (spec
baseline-pr65-pr453.md §2.3 and §7.1, §4.2 for the NTK tables), and the bf16 rounding of freshly
initialised weights (spec §2.2, item 4).

The model is a parameter table (`param_table`) plus functions over a dict name -> tensor. Parameter
names are the PyTorch state-dict names of the specs (unbanked, PR315/PR1392 spelling).

Status: the baseline path (every record feature off, the config defaults) is the one pgolf's tests
compare against (tests/test_reference.c) and was reviewed against spec §2.2-§2.3 and §7.1-§7.2. The
record-feature paths below were written from the specs but are not exercised by any test until pgolf
implements the feature; review them against the spec before relying on them.

Spec sections: baseline model §2.2-§2.3; PR65 §3.2-§3.4; PR315 §4.2; PR453 loop gate §6.2;
PR1311 §2.3-§2.4 (second spec); PR1392 §3.3-§3.5; PR187 §4.3-§4.6; PR1289 lanes (second spec §3.4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ref_config import Config

FLT_EPSILON = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps: F.rms_norm(eps=None) (spec §7.2)
# xcheck.py only: RoPE tables in the model's dtype, without the records' bf16 rounding (spec §7.1)
EXACT_ROPE = False
QUANT_Q = 0.9999984  # 99.99984 % (spec §2.9)


# --------------------------------------------------------------------------------------------------
# parameter table
# --------------------------------------------------------------------------------------------------

@dataclass
class ParamSpec:
    name: str
    shape: Tuple[int, ...]
    init: Tuple  # ("zeros",) ("ones",) ("const", v) ("normal", std) ("uniform", bound) ("ortho", gain, mult)
    #              ("resid_mix",) ("overtone", std)
    group: str  # optimizer group: token | muon | scalar | head | none
    linear: bool = False  # a CastedLinear weight (subject to fake quantisation)
    side: bool = False  # a CastedLinear outside the blocks (bigram/VE projection, lm_head)


def _is_control(name: str, cfg: Config) -> bool:
    return any(p in name for p in cfg.control_patterns)


def _linear_init(cfg: Config, name: str, shape: Tuple[int, int], ctor: Tuple, zero: bool, eff_layers: int,
                 always_ortho: bool = False) -> Tuple:
    """Init of an nn.Linear weight under the record's INIT_STYLE.

    ctor: what the module constructor leaves (PyTorch default U(+-1/sqrt(in)) or zeros).
    zero: the `_zero_init` flag (attn.proj, mlp.proj, lm_head, PR65 bigram proj, adapter up).
    """
    if zero:
        return ("zeros",)
    style = cfg["PGOLF_INIT_STYLE"]
    r, c = shape
    if style == "ortho":  # PR65 §3.3: every non-zero-init Linear
        return ("ortho", 1.0, 1.0)
    if style == "ortho_mup":  # PR315 §4.2: both dims >= 64, x 1/sqrt(2L) on *.proj
        if r >= 64 and c >= 64:
            mult = 1.0 / math.sqrt(2 * eff_layers) if (name.endswith(".proj.weight") or ".proj." in name) else 1.0
            return ("ortho", 1.0, mult)
        return ctor
    if style == "banked":  # PR1311/1392: bank matrices always orthogonal, other Linears if min >= 64
        if always_ortho or min(r, c) >= 64:
            return ("ortho", 1.0, 1.0)
        return ctor
    return ctor


def effective_layers(cfg: Config) -> int:
    if cfg.loop_enabled:
        return cfg["NUM_LAYERS"] - cfg["LOOP_CORE_LAYERS"] + cfg["LOOP_CORE_LAYERS"] * cfg["LOOP_REPEATS"]
    return cfg["NUM_LAYERS"]


def _block_specs(cfg: Config, prefix: str, eff_layers: int, parallel_lanes: bool) -> List[ParamSpec]:
    d, kv, h, H = cfg.d, cfg.kv_dim, cfg.mlp_hidden, cfg["NUM_HEADS"]
    banked = cfg["PGOLF_INIT_STYLE"] == "banked"
    u = lambda fan_in: ("uniform", 1.0 / math.sqrt(fan_in))

    def mat(n: str, shape: Tuple[int, int], zero: bool) -> ParamSpec:
        full = f"{prefix}.{n}"
        grp = "scalar" if _is_control(full, cfg) else "muon"
        init = _linear_init(cfg, full, shape, u(shape[1]), zero, eff_layers, always_ortho=banked)
        return ParamSpec(full, shape, init, grp, linear=True)

    specs = [
        mat("attn.c_q.weight", (d, d), False),
        mat("attn.c_k.weight", (kv, d), False),
        mat("attn.c_v.weight", (kv, d), False),
        mat("attn.proj.weight", (d, d), True),
        ParamSpec(f"{prefix}.attn.q_gain", (H,), ("const", cfg["QK_GAIN_INIT"]), "scalar"),
        mat("mlp.fc.weight", (h, d), False),
        mat("mlp.proj.weight", (d, h), True),
        ParamSpec(f"{prefix}.attn_scale", (d,), ("ones",), "scalar"),
        ParamSpec(f"{prefix}.mlp_scale", (d,), ("ones",), "scalar"),
        ParamSpec(f"{prefix}.resid_mix", (2, d), ("resid_mix",), "scalar"),
    ]
    if parallel_lanes:
        specs.append(ParamSpec(f"{prefix}.resid_mix_mlp", (2, d), ("resid_mix",), "scalar"))
        specs.append(ParamSpec(f"{prefix}.route", (4,), ("ones",), "scalar"))
    return specs


def param_table(cfg: Config) -> List[ParamSpec]:
    """All parameters of the configured model, in state-dict order, with init and optimizer group."""
    d, V, L = cfg.d, cfg["VOCAB_SIZE"], cfg["NUM_LAYERS"]
    part = cfg["PGOLF_OPT_PARTITION"]
    eff = effective_layers(cfg)
    side_proj_group = "scalar" if part == "banked" else "muon"
    specs: List[ParamSpec] = []
    if cfg["TIE_EMBEDDINGS"]:
        std = cfg["TIED_EMBED_INIT_STD"]
        tok_init = ("overtone", std) if cfg["OVERTONE_INIT"] else ("normal", std)
    else:
        tok_init = ("normal", 1.0)  # nn.Embedding default: _init_weights only re-inits tied tables
    specs.append(ParamSpec("tok_emb.weight", (V, d), tok_init, "token"))
    # PR65 / PR187 BigramHash (mult-add hash)
    if cfg["BIGRAM_HASH_BUCKETS"] > 0:
        nb, db = cfg["BIGRAM_HASH_BUCKETS"], cfg["BIGRAM_HASH_DIM"]
        specs.append(ParamSpec("bigram_hash.table.weight", (nb, db), ("normal", 0.01),
                               "muon" if part == "pr187" else "token"))
        zero = cfg["BIGRAM_HASH_PROJ_INIT"] == "zero"
        init = _linear_init(cfg, "bigram_hash.proj.weight", (d, db), ("uniform", 1.0 / math.sqrt(db)), zero, eff)
        specs.append(ParamSpec("bigram_hash.proj.weight", (d, db), init, side_proj_group, linear=True, side=True))
    # PR315+ BigramHashEmbedding (XOR hash)
    if cfg["BIGRAM_VOCAB_SIZE"] > 0:
        vb, db = cfg["BIGRAM_VOCAB_SIZE"], cfg["BIGRAM_DIM"]
        specs.append(ParamSpec("bigram.embed.weight", (vb, db), ("zeros",), "token"))
        if db != d:
            init = _linear_init(cfg, "bigram.proj.weight", (d, db), ("zeros",), False, eff)
            specs.append(ParamSpec("bigram.proj.weight", (d, db), init, side_proj_group, linear=True, side=True))
        specs.append(ParamSpec("bigram.scale", (), ("const", 0.05), "scalar"))
    mode = cfg.smear_mode
    if mode == "pre":
        specs.append(ParamSpec("smeargate.gate", (d,), ("const", 3.0), "scalar"))
    elif mode == "post":
        specs.append(ParamSpec("smear.gate", (d,), ("zeros",), "scalar"))
    if cfg["PRE_ENRICH"]:
        hp = d * 3 // 2
        for n, shape in (("pre_enrich.0.weight", (hp, d)), ("pre_enrich.2.weight", (d, hp))):
            init = _linear_init(cfg, n, shape, ("uniform", 1.0 / math.sqrt(shape[1])), False, eff)
            specs.append(ParamSpec(n, shape, init, "muon", linear=True))
    lanes = cfg["PARALLEL_MODE"] != "sum" and cfg["PARALLEL_START_LAYER"] >= 0
    lanes1289 = lanes and cfg["PARALLEL_MODE"] in ("lanes", "lanes1289")  # PR1334 adds only lane_merge
    if cfg.loop_enabled:
        core = cfg["LOOP_CORE_LAYERS"]
        n_stem = (L - core) // 2
        n_tail = (L - core) - n_stem
        nskip = min(n_stem, n_tail)
        if cfg["LOOP_REPEAT_EMBED"]:
            specs.append(ParamSpec("loop_repeat_embed", (cfg["LOOP_REPEATS"], d), ("zeros",), "scalar"))
        if cfg["BACKOUT_LAYER"] > 0:
            specs.append(ParamSpec("backout_lambda", (), ("const", cfg["BACKOUT_INIT"]), "scalar"))
        specs.append(ParamSpec("skip_weights", (nskip, d), ("ones",), "scalar"))
        for i in range(n_stem):
            specs += _block_specs(cfg, f"stem_blocks.{i}", eff, False)
        for i in range(core):
            specs += _block_specs(cfg, f"loop_blocks.{i}", eff, False)
        hr = max(1, int(cfg["REFINE_MLP_MULT"] * d))
        for i in range(core):
            p = f"refine_blocks.{i}"
            if cfg["REFINE_MLP_MULT"] > 0:
                specs.append(ParamSpec(f"{p}.mlp.fc.weight", (hr, d),
                                       _linear_init(cfg, f"{p}.mlp.fc.weight", (hr, d), ("uniform", 1 / math.sqrt(d)), False, eff),
                                       "muon", linear=True))
                specs.append(ParamSpec(f"{p}.mlp.proj.weight", (d, hr), ("zeros",), "muon", linear=True))
            specs.append(ParamSpec(f"{p}.local_mix_gate", (d,), ("zeros",), "scalar"))
            if cfg["REFINE_MLP_MULT"] > 0:
                specs.append(ParamSpec(f"{p}.mlp_scale", (d,), ("ones",), "scalar"))
            specs.append(ParamSpec(f"{p}.resid_mix", (2, d), ("resid_mix",), "scalar"))
        a = cfg["LOOP_ADAPTER_DIM"]
        if a > 0:
            for k in range(core * cfg["LOOP_REPEATS"]):
                p = f"loop_adapters.{k}"
                specs.append(ParamSpec(f"{p}.down.weight", (a, d),
                                       _linear_init(cfg, f"{p}.down.weight", (a, d), ("uniform", 1 / math.sqrt(d)), False, eff),
                                       "muon", linear=True))
                specs.append(ParamSpec(f"{p}.up.weight", (d, a), ("zeros",), "muon", linear=True))
                specs.append(ParamSpec(f"{p}.adapter_scale", (d,), ("ones",), "scalar"))
        for i in range(n_tail):
            specs += _block_specs(cfg, f"tail_blocks.{i}", eff, False)
    else:
        if cfg.recur_layers:
            for k in range(len(cfg.recur_layers)):
                # PR1392 §3.3: fixed at 0.5, in no optimizer group
                specs.append(ParamSpec(f"recur_scales.{k}", (d,), ("const", 0.5), "none"))
        enc = L // 2
        specs.append(ParamSpec("skip_weights", (min(enc, L - enc), d), ("ones",), "scalar"))
        for i in range(L):
            par = lanes1289 and i >= cfg["PARALLEL_START_LAYER"]
            specs += _block_specs(cfg, f"blocks.{i}", eff, par)
        if lanes:
            specs.append(ParamSpec("lane_merge", (), ("const", 0.5), "scalar"))
    if cfg.ve_layers:
        vd, kv = cfg["VE_DIM"], cfg.kv_dim
        specs.append(ParamSpec("ve_shared.embed.weight", (V, vd), ("normal", 0.01), "token"))
        if vd != kv:
            init = _linear_init(cfg, "ve_shared.proj.weight", (kv, vd), ("zeros",), False, eff)
            specs.append(ParamSpec("ve_shared.proj.weight", (kv, vd), init, side_proj_group, linear=True, side=True))
        specs.append(ParamSpec("ve_shared.scale", (), ("const", 0.1), "scalar"))
        for k in range(len(cfg.ve_layers)):
            specs.append(ParamSpec(f"ve_layer_scales.{k}", (1,), ("ones",), "scalar"))
    if not cfg["TIE_EMBEDDINGS"]:
        specs.append(ParamSpec("lm_head.weight", (V, d), ("zeros",), "head", linear=True, side=True))
    return specs


def param_count(cfg: Config) -> int:
    total = 0
    for s in param_table(cfg):
        total += math.prod(s.shape) if s.shape else 1
    return total


# --------------------------------------------------------------------------------------------------
# initialisation (distributions of the records' init rules; not PyTorch's RNG stream)
# --------------------------------------------------------------------------------------------------

def orthogonal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    """Orthogonal matrix from the QR of a Gaussian with the sign fix diag(R) > 0 (spec §3.3).

    Orthonormal rows when rows <= cols, orthonormal columns otherwise."""
    tall = rows >= cols
    a = torch.randn((rows, cols) if tall else (cols, rows), generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q if tall else q.t()


def overtone(rows: int, cols: int, std: float, gen: torch.Generator) -> torch.Tensor:
    """PR187 §4.5: N(0, std^2), then the singular values replaced by S_0 * (i+1)^(-1/2)."""
    w = torch.randn(rows, cols, generator=gen, dtype=torch.float64) * std
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    target = s[0] * torch.arange(1, s.numel() + 1, dtype=torch.float64) ** -0.5
    return (u * target.unsqueeze(0)) @ vh


def init_params(cfg: Config, seed: int, dtype: torch.dtype, bf16_round: bool = True) -> Dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out: Dict[str, torch.Tensor] = {}
    for s in param_table(cfg):
        kind = s.init[0]
        shape = s.shape
        if kind == "zeros":
            t = torch.zeros(shape, dtype=torch.float64)
        elif kind == "ones":
            t = torch.ones(shape, dtype=torch.float64)
        elif kind == "const":
            t = torch.full(shape, float(s.init[1]), dtype=torch.float64)
        elif kind == "normal":
            t = torch.randn(shape, generator=gen, dtype=torch.float64) * s.init[1]
        elif kind == "uniform":
            t = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * s.init[1]
        elif kind == "ortho":
            t = orthogonal(shape[0], shape[1], gen) * s.init[1] * s.init[2]
        elif kind == "overtone":
            t = overtone(shape[0], shape[1], s.init[1], gen)
        elif kind == "resid_mix":
            t = torch.stack((torch.ones(shape[1], dtype=torch.float64), torch.zeros(shape[1], dtype=torch.float64)))
        else:
            raise AssertionError(kind)
        if bf16_round:  # spec §2.2: the model is .bfloat16()'d after construction
            t = t.float().bfloat16().to(torch.float64)
        out[s.name] = t.to(dtype)
    return out


def ortho_violations(name: str, w: torch.Tensor, shape: Tuple[int, int], scale: float) -> List[str]:
    """initcheck of an ("ortho", gain, mult) tensor: W W^T (rows <= cols) or W^T W (rows > cols)
    equals scale^2 I up to the bf16 rounding of the entries (relative 2^-8 on the diagonal,
    2^-7 * scale^2 absolute elsewhere), and the entries look like a random rotation's (mean 0,
    std scale/sqrt(max(rows, cols)), normal-like kurtosis), which a permutation or an identity fails."""
    r, c = shape
    W = w.reshape(r, c).double()
    G = W @ W.t() if r <= c else W.t() @ W
    bad: List[str] = []
    s2 = scale * scale
    diag_err = float((torch.diagonal(G) - s2).abs().max()) / s2
    off = G - torch.diag(torch.diagonal(G))
    off_err = float(off.abs().max()) / s2
    if diag_err > 2 ** -7 or off_err > 2 ** -7:
        bad.append(f"{name}: not orthogonal x {scale:.6g}: diagonal rel error {diag_err:.3g}, off-diagonal {off_err:.3g}")
    n = W.numel()
    if n >= 1000:
        std = scale / math.sqrt(max(r, c))
        mean, sd = float(W.mean()), float(W.std())
        kurt = float(((W - mean) ** 4).mean()) / (sd ** 4)
        if abs(mean) > 6 * std / math.sqrt(n) or abs(sd - std) > 0.02 * std or not 2.2 < kurt < 3.8:
            bad.append(f"{name}: entries mean {mean:.3g} std {sd:.4g} (expected {std:.4g}) kurtosis {kurt:.3g}: "
                       f"not a random orthogonal matrix")
    return bad


# --------------------------------------------------------------------------------------------------
# ops
# --------------------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without weight: x / sqrt(mean(x^2) + FLT_EPSILON) (spec §7.2)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + FLT_EPSILON)


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """x[:, t-1] per row, zero at t = 0 ([B, T, d])."""
    return torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)


def fake_quant_quantile(w: torch.Tensor) -> torch.Tensor:
    """PR65 §3.4 QAT grid (no grad), in float32 as the record: w = bf16(W) per row, clip =
    max(quantile(|w|, 0.9999984), 1e-8) (torch.quantile as the export), s = clip/31,
    w_q = bf16(round(clamp(w, +-clip)/s)*s). Returned in w's dtype."""
    w32 = w.float().bfloat16().float()
    clip = torch.quantile(w32.abs(), QUANT_Q, dim=-1).clamp_min(1e-8)[:, None]
    s = clip / 31.0
    wc = torch.maximum(torch.minimum(w32, clip), -clip)
    return (torch.round(wc / s) * s).bfloat16().to(w.dtype)


def fake_quant_rowmax(w: torch.Tensor) -> torch.Tensor:
    """PR187 §4.6 QAT grid, float32 on the master: s = max(rowmax, 1e-12)/31,
    bf16(clamp(round(w/s), -31, 31) * s)."""
    w32 = w.float()
    s = w32.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 31.0
    return (torch.clamp(torch.round(w32 / s), -31, 31) * s).bfloat16().to(w.dtype)


def fake_quant_late(w: torch.Tensor, low: int) -> torch.Tensor:
    """PR315 §4.8 / PR1311 §2.7 / PR1392 §3.7 late-QAT grid, float32 on the master:
    s = max(rowmax/31, 1/31), bf16(clamp(round(w/s), low, 31) * s)."""
    w32 = w.float()
    s = (w32.abs().amax(dim=1) / 31.0).clamp_min(1.0 / 31.0)[:, None]
    return (torch.clamp(torch.round(w32 / s), low, 31) * s).bfloat16().to(w.dtype)


def rope_table(cfg: Config, T: int, dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [T, rd/2] with the records' bf16 table values.

    bf16-buffer path (baseline, PR65, PR187; PR315+ when T <= 1024), spec §7.1: positions bf16(p),
    inv_freq bf16(base^(-2j/rd)), angle fp32(p~)*fp32(i~) in fp32, cos/sin in fp32 rounded to bf16.
    NTK path (PR315+ when T > 1024), spec §4.2: base' = base*(T/1024)^(rd/(rd-2)), inv_freq, positions
    and cos/sin in fp32, rounded to bf16 at use."""
    rd = cfg.rope_dims
    base = cfg["ROPE_BASE"]
    if EXACT_ROPE:  # xcheck.py: the records' formulas in dtype, no bf16 rounding
        exps = torch.arange(0, rd, 2, dtype=dtype) / rd
        if cfg["PGOLF_ROPE_NTK"] and T > cfg["PGOLF_ROPE_NTK_REF_LEN"]:
            base = base * ((T / cfg["PGOLF_ROPE_NTK_REF_LEN"]) ** (rd / (rd - 2)))
        ang = torch.outer(torch.arange(T, dtype=dtype), 1.0 / (base ** exps))
        return ang.cos(), ang.sin()
    exps = torch.arange(0, rd, 2, dtype=torch.float32) / rd
    if cfg["PGOLF_ROPE_NTK"] and T > cfg["PGOLF_ROPE_NTK_REF_LEN"]:
        new_base = base * ((T / cfg["PGOLF_ROPE_NTK_REF_LEN"]) ** (rd / (rd - 2)))
        inv = 1.0 / (new_base ** exps)
        pos = torch.arange(T, dtype=torch.float32)
    else:
        inv = (1.0 / (base ** exps)).bfloat16().float()
        pos = torch.arange(T, dtype=torch.float32).bfloat16().float()
    ang = torch.outer(pos, inv)
    return ang.cos().bfloat16().to(dtype), ang.sin().bfloat16().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half on the first rd dims of x [B, T, H, D]; x' = [x1 cos + x2 sin, -x1 sin + x2 cos]."""
    half = cos.shape[-1]
    rd = 2 * half
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    x1, x2, rest = x[..., :half], x[..., half:rd], x[..., rd:]
    return torch.cat((x1 * c + x2 * s, -x1 * s + x2 * c, rest), dim=-1)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v. q [B,T,H,D], k/v [B,T,Hk,D]; head h uses kv h // (H/Hk)."""
    B, T, H, D = q.shape
    group = H // k.shape[2]
    qh = q.transpose(1, 2)
    kh = k.transpose(1, 2).repeat_interleave(group, dim=1)
    vh = v.transpose(1, 2).repeat_interleave(group, dim=1)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(mask, float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.matmul(p, vh).transpose(1, 2)  # [B, T, H, D]


def xsa(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exclusive self-attention (spec §4.2): remove from y[t,h] its component along v[t, h//group]."""
    B, T, H, D = y.shape
    Hk = v.shape[2]
    yg = y.reshape(B, T, Hk, H // Hk, D)
    vn = (v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unsqueeze(-2)
    return (yg - (yg * vn).sum(dim=-1, keepdim=True) * vn).reshape(B, T, H, D)


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------

@dataclass
class RunState:
    training: bool = True
    recur_active: bool = False
    late_qat: bool = False
    capture: Optional[Dict[str, torch.Tensor]] = None  # name -> running X^T X of the linear's inputs
    sequential_replica: bool = False  # PR1392 §3.8: GPTQ Hessian replica (no recurrence, no parallel)


class Model:
    """Functional reference model over `params` (canonical names -> tensors)."""

    def __init__(self, cfg: Config, params: Dict[str, torch.Tensor]):
        self.cfg = cfg
        self.p = params
        self.dtype = next(iter(params.values())).dtype
        self.specs = {s.name: s for s in param_table(cfg)}
        missing = [n for n in self.specs if n not in params]
        extra = [n for n in params if n not in self.specs]
        if missing or extra:
            raise ValueError(f"weights do not match the config: missing {missing[:8]} unexpected {extra[:8]}")
        for n, s in self.specs.items():
            if tuple(params[n].shape) != tuple(s.shape):
                raise ValueError(f"weights: {n} has shape {tuple(params[n].shape)}, config expects {s.shape}")
        self._rope: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- pieces ----
    def rope(self, T: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if T not in self._rope:
            self._rope[T] = rope_table(self.cfg, T, self.dtype)
        return self._rope[T]

    def weight(self, name: str, st: RunState) -> torch.Tensor:
        w = self.p[name]
        if not st.training:
            return w
        cfg = self.cfg
        q: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
        if cfg["PGOLF_QAT_MODE"] == "quantile":
            q = fake_quant_quantile
        elif cfg["PGOLF_QAT_MODE"] == "rowmax":
            q = fake_quant_rowmax
        elif st.late_qat:
            # late QAT hits every CastedLinear; in the banked records only the side projections are CastedLinear
            if cfg["PGOLF_OPT_PARTITION"] != "banked" or self.specs[name].side:
                low = cfg["PGOLF_LATE_QAT_CLAMP_LOW"]
                q = lambda t: fake_quant_late(t, low)
        if q is None:
            return w
        with torch.no_grad():
            wq = q(w.detach())
        return w + (wq - w).detach()  # straight-through estimator

    def linear(self, x: torch.Tensor, name: str, st: RunState) -> torch.Tensor:
        if st.capture is not None:
            x2 = x.detach().reshape(-1, x.shape[-1]).double()
            h = x2.t() @ x2
            st.capture[name] = st.capture.get(name, 0) + h
        return torch.matmul(x, self.weight(name, st).t())

    def mlp(self, prefix: str, u: torch.Tensor, st: RunState) -> torch.Tensor:
        h = self.linear(u, f"{prefix}.fc.weight", st)
        act = self.cfg["PGOLF_MLP_ACTIVATION"]
        if act == "relu2":
            h = torch.relu(h).square()
        elif act == "leaky_relu2":
            h = F.leaky_relu(h, negative_slope=self.cfg["PGOLF_LEAKY_RELU_SLOPE"]).square()
        else:
            h = F.gelu(h)
        return self.linear(h, f"{prefix}.proj.weight", st)

    def attn(self, prefix: str, u: torch.Tensor, st: RunState, use_xsa: bool, ve: Optional[torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        B, T, d = u.shape
        H, Hk, D = cfg["NUM_HEADS"], cfg["NUM_KV_HEADS"], cfg.head_dim
        q = self.linear(u, f"{prefix}.c_q.weight", st).reshape(B, T, H, D)
        k = self.linear(u, f"{prefix}.c_k.weight", st).reshape(B, T, Hk, D)
        v = self.linear(u, f"{prefix}.c_v.weight", st)
        if ve is not None:
            v = v + ve
        v = v.reshape(B, T, Hk, D)
        q = rms_norm(q)
        k = rms_norm(k)
        cos, sin = self.rope(T)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        q = q * self.p[f"{prefix}.q_gain"][None, None, :, None]
        y = causal_attention(q, k, v)
        if use_xsa:
            y = xsa(y, v)
        return self.linear(y.reshape(B, T, d), f"{prefix}.proj.weight", st)

    def block(self, prefix: str, x: torch.Tensor, x0: torch.Tensor, st: RunState, s: float, use_xsa: bool,
              ve: Optional[torch.Tensor] = None, parallel: bool = False) -> torch.Tensor:
        """Block (spec §2.3, LN scale §4.2, parallel sum PR1392 §3.4)."""
        p = self.p
        mix = p[f"{prefix}.resid_mix"]
        xi = mix[0] * x + mix[1] * x0
        a = self.attn(f"{prefix}.attn", rms_norm(xi) * s, st, use_xsa, ve)
        if parallel:
            m = self.mlp(f"{prefix}.mlp", rms_norm(xi) * s, st)
            return xi + p[f"{prefix}.attn_scale"] * a + p[f"{prefix}.mlp_scale"] * m
        xo = xi + p[f"{prefix}.attn_scale"] * a
        return xo + p[f"{prefix}.mlp_scale"] * self.mlp(f"{prefix}.mlp", rms_norm(xo) * s, st)

    def lanes_block(self, prefix: str, xa: torch.Tensor, xm: torch.Tensor, x0: torch.Tensor, st: RunState, s: float,
                    use_xsa: bool, ve: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """PR1289 parallel block on two lanes (second spec §3.4)."""
        p = self.p
        r = p[f"{prefix}.route"]
        ma, mm = p[f"{prefix}.resid_mix"], p[f"{prefix}.resid_mix_mlp"]
        xia = ma[0] * xa + ma[1] * x0
        da = p[f"{prefix}.attn_scale"] * self.attn(f"{prefix}.attn", rms_norm(xia) * s, st, use_xsa, ve)
        xim = mm[0] * xm + mm[1] * x0
        dm = p[f"{prefix}.mlp_scale"] * self.mlp(f"{prefix}.mlp", rms_norm(xim) * s, st)
        return xa + r[0] * da + r[2] * dm, xm + r[1] * da + r[3] * dm

    def lanes_block_1334(self, prefix: str, xa: torch.Tensor, xm: torch.Tensor, x0: torch.Tensor, st: RunState,
                         s: float, use_xsa: bool, ve: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """PR1334 parallel block (second spec §3.4): the attention lane mixes x0 in and keeps the mix as its
        residual base; the MLP lane reads its own stream without an x0 mix; no route."""
        p = self.p
        ma = p[f"{prefix}.resid_mix"]
        xia = ma[0] * xa + ma[1] * x0
        la = xia + p[f"{prefix}.attn_scale"] * self.attn(f"{prefix}.attn", rms_norm(xia) * s, st, use_xsa, ve)
        lm = xm + p[f"{prefix}.mlp_scale"] * self.mlp(f"{prefix}.mlp", rms_norm(xm) * s, st)
        return la, lm

    def embed(self, idx: torch.Tensor, st: RunState) -> torch.Tensor:
        cfg, p = self.cfg, self.p
        x = p["tok_emb.weight"][idx]
        prev = torch.cat((torch.zeros_like(idx[:, :1]), idx[:, :-1]), dim=1)
        if cfg["BIGRAM_HASH_BUCKETS"] > 0:  # PR65 §3.2 / PR187 §4.4
            bucket = (prev * 92821 + idx) % cfg["BIGRAM_HASH_BUCKETS"]
            x = x + self.linear(p["bigram_hash.table.weight"][bucket], "bigram_hash.proj.weight", st)
        if cfg["BIGRAM_VOCAB_SIZE"] > 0:  # PR315 §4.2: reserved bucket V_b-1 at t = 0
            mod = cfg["BIGRAM_VOCAB_SIZE"] - 1
            i32, p32 = idx.to(torch.int32), prev.to(torch.int32)  # the record hashes in (wrapping) int32
            h = (torch.bitwise_xor(36313 * i32, 27191 * p32) % mod).long()
            h[:, 0] = mod
            e = p["bigram.embed.weight"][h]
            if "bigram.proj.weight" in p:
                e = self.linear(e, "bigram.proj.weight", st)
            x = x + p["bigram.scale"] * e
        mode = cfg.smear_mode
        if mode == "pre":  # PR65 §3.2 / PR187 §4.4: g*x + (1-g)*x_prev, before the norm
            g = torch.sigmoid(p["smeargate.gate"])
            x = g * x + (1 - g) * shift_right(x)
        if cfg["PRE_ENRICH"]:  # PR187 §4.4: W2 GELU(W1 x), exact erf GELU, no residual
            x = self.linear(F.gelu(self.linear(x, "pre_enrich.0.weight", st)), "pre_enrich.2.weight", st)
        x = rms_norm(x)
        if mode == "post":  # PR315 §4.2: (1-g)*x + g*x_prev, after the norm
            g = torch.sigmoid(p["smear.gate"])
            x = (1 - g) * x + g * shift_right(x)
        return x

    def ve(self, idx: torch.Tensor, st: RunState) -> Optional[torch.Tensor]:
        if not self.cfg.ve_layers:
            return None
        e = self.p["ve_shared.embed.weight"][idx]
        if "ve_shared.proj.weight" in self.p:
            e = self.linear(e, "ve_shared.proj.weight", st)
        return e * self.p["ve_shared.scale"]

    def ln_scale(self, depth: int) -> float:
        return 1.0 / math.sqrt(depth + 1) if self.cfg["LN_SCALE"] else 1.0

    # ---- trunks ----
    def hidden(self, idx: torch.Tensor, st: RunState) -> torch.Tensor:
        """Final-normed hidden states [B, T, d]."""
        x = self.embed(idx, st)
        if self.cfg.loop_enabled:
            x = self._loop_trunk(x, st)
        else:
            x = self._unet_trunk(idx, x, st)
        return rms_norm(x)

    def _unet_trunk(self, idx: torch.Tensor, x: torch.Tensor, st: RunState) -> torch.Tensor:
        cfg, p = self.cfg, self.p
        L = cfg["NUM_LAYERS"]
        enc, dec = L // 2, L - L // 2
        x0 = x
        xsa_from = L - cfg["XSA_LAST_N"] if cfg["XSA_LAST_N"] > 0 else L
        ve_all = self.ve(idx, st)
        ve_layers = cfg.ve_layers
        par_from = cfg["PARALLEL_START_LAYER"]
        if st.sequential_replica:
            par_from = -1
        lanes = cfg["PARALLEL_MODE"] != "sum" and par_from >= 0
        recur = cfg.recur_layers if (st.recur_active and not st.sequential_replica) else []
        dr_layers, dr_passes = cfg.depth_recur_layers, cfg["DEPTH_RECUR_PASSES"]

        def ve_for(i: int) -> Optional[torch.Tensor]:
            if ve_all is None or i not in ve_layers:
                return None
            return ve_all * p[f"ve_layer_scales.{ve_layers.index(i)}"]

        def run(i: int, xin: torch.Tensor) -> torch.Tensor:
            par = par_from >= 0 and i >= par_from
            return self.block(f"blocks.{i}", xin, x0, st, self.ln_scale(i), i >= xsa_from, ve_for(i), par)

        if lanes:
            return self._lanes_trunk(x, x0, st, enc, dec, par_from, xsa_from, ve_for)

        if cfg["ENCODER_RECURRENCE"]:  # PR187 §4.4 step 5
            for i in range(enc):
                x = run(i, x)
            x = rms_norm(x)
        skips: List[torch.Tensor] = []
        for i in range(enc):
            x = run(i, x)
            if i in dr_layers:  # PR1311 plain re-execution (disabled in the record)
                for _ in range(dr_passes - 1):
                    x = run(i, x)
            skips.append(x)
            if i in recur:  # PR1392 §3.4: damped second pass after the skip push
                r = p[f"recur_scales.{recur.index(i)}"]
                x = x + r * (run(i, x) - x)
        for j in range(dec):
            i = enc + j
            if skips:
                x = x + p["skip_weights"][j] * skips.pop()
            x = run(i, x)
            if i in dr_layers:
                for _ in range(dr_passes - 1):
                    x = run(i, x)
        return x

    def _lanes_trunk(self, x, x0, st, enc, dec, par_from, xsa_from, ve_for) -> torch.Tensor:
        p = self.p
        xa = xm = x
        skips: List[torch.Tensor] = []
        pr1334 = self.cfg["PARALLEL_MODE"] == "lanes1334"
        lane_block = self.lanes_block_1334 if pr1334 else self.lanes_block

        def step(i: int, xa: torch.Tensor, xm: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
            if i >= par_from:
                return lane_block(f"blocks.{i}", xa, xm, x0, st, self.ln_scale(i), i >= xsa_from, ve_for(i))
            out = self.block(f"blocks.{i}", xa, x0, st, self.ln_scale(i), i >= xsa_from, ve_for(i))
            return out, out

        for i in range(enc):
            xa, xm = step(i, xa, xm)
            skips.append(xa)
        for j in range(dec):
            i = enc + j
            if skips:
                sv = p["skip_weights"][j] * skips.pop()
                if not pr1334:  # PR1289: the skip goes to both lanes of a parallel block
                    xa = xa + sv
                    if i >= par_from:
                        xm = xm + sv
                elif i <= par_from:  # PR1334: to its single stream, which becomes both lanes at par_from
                    xa = xa + sv
                    xm = xa
                # PR1334 after its first lane block: added to the dead single stream, i.e. dropped
            xa, xm = step(i, xa, xm)
        m = p["lane_merge"]
        return m * xa + (1 - m) * xm

    def _loop_trunk(self, x: torch.Tensor, st: RunState) -> torch.Tensor:
        """PR453 loop gate (spec §6.2)."""
        cfg, p = self.cfg, self.p
        L, core, R = cfg["NUM_LAYERS"], cfg["LOOP_CORE_LAYERS"], cfg["LOOP_REPEATS"]
        n_stem = (L - core) // 2
        n_tail = (L - core) - n_stem
        nskip = min(n_stem, n_tail)
        attn_blocks = [f"stem_blocks.{i}" for i in range(n_stem)] + [f"loop_blocks.{i}" for i in range(core)] + \
                      [f"tail_blocks.{i}" for i in range(n_tail)]
        xsa_set = set(attn_blocks[max(0, len(attn_blocks) - cfg["XSA_LAST_N"]):]) if cfg["XSA_LAST_N"] > 0 else set()
        backout = cfg["BACKOUT_LAYER"]
        x0 = x
        x_back: Optional[torch.Tensor] = None
        depth = 0
        skips: List[torch.Tensor] = []
        for i in range(n_stem):
            name = f"stem_blocks.{i}"
            x = self.block(name, x, x0, st, self.ln_scale(depth), name in xsa_set)
            if len(skips) < nskip:
                skips.append(x)
            depth += 1
            if backout > 0 and depth == backout:
                x_back = x
        for r in range(R):
            if cfg["LOOP_REPEAT_EMBED"]:
                x = x + p["loop_repeat_embed"][r]
            use_attn = (r % cfg["LOOP_ATTN_EVERY"] == 0) or (r == R - 1)
            for j in range(core):
                if use_attn:
                    name = f"loop_blocks.{j}"
                    x = self.block(name, x, x0, st, self.ln_scale(depth), name in xsa_set)
                else:
                    x = self._refine_block(f"refine_blocks.{j}", x, x0, st)
                if cfg["LOOP_ADAPTER_DIM"] > 0:
                    x = x + self._adapter(f"loop_adapters.{r * core + j}", x, st)
                depth += 1
                if backout > 0 and depth == backout:
                    x_back = x
        for k in range(n_tail):
            if skips and k < nskip:
                x = x + p["skip_weights"][k] * skips.pop()
            name = f"tail_blocks.{k}"
            x = self.block(name, x, x0, st, self.ln_scale(depth), name in xsa_set)
            depth += 1
            if backout > 0 and depth == backout:
                x_back = x
        if backout > 0 and x_back is not None:
            x = x - p["backout_lambda"] * x_back
        return x

    def _refine_block(self, prefix: str, x: torch.Tensor, x0: torch.Tensor, st: RunState) -> torch.Tensor:
        p = self.p
        mix = p[f"{prefix}.resid_mix"]
        x = mix[0] * x + mix[1] * x0
        if self.cfg["REFINE_LOCAL_MIX"]:
            g = torch.sigmoid(p[f"{prefix}.local_mix_gate"])
            x = (1 - g) * x + g * shift_right(rms_norm(x))
        if f"{prefix}.mlp_scale" in p:
            h = torch.relu(self.linear(rms_norm(x), f"{prefix}.mlp.fc.weight", st)).square()
            x = x + p[f"{prefix}.mlp_scale"] * self.linear(h, f"{prefix}.mlp.proj.weight", st)
        return x

    def _adapter(self, prefix: str, x: torch.Tensor, st: RunState) -> torch.Tensor:
        h = torch.relu(self.linear(rms_norm(x), f"{prefix}.down.weight", st)).square()
        return self.p[f"{prefix}.adapter_scale"] * self.linear(h, f"{prefix}.up.weight", st)

    # ---- heads ----
    def logits(self, idx: torch.Tensor, st: RunState) -> torch.Tensor:
        """Softcapped logits [B, T, V] (spec §2.3 steps 4-5)."""
        h = self.hidden(idx, st)
        if self.cfg["TIE_EMBEDDINGS"]:
            z = torch.matmul(h, self.p["tok_emb.weight"].t())
        else:
            z = self.linear(h, "lm_head.weight", st)
        c = self.cfg["LOGIT_SOFTCAP"]
        return c * torch.tanh(z / c)

    def loss(self, idx: torch.Tensor, tgt: torch.Tensor, st: RunState) -> torch.Tensor:
        """Mean cross entropy over all B*T targets (spec §2.3 step 6)."""
        lg = self.logits(idx, st)
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), reduction="mean")

    def token_nll(self, idx: torch.Tensor, tgt: torch.Tensor, st: RunState, temperature: float = 1.0) -> torch.Tensor:
        lg = self.logits(idx, st)
        if temperature != 1.0:
            lg = lg / temperature
        return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), tgt.reshape(-1), reduction="none").reshape(tgt.shape)
