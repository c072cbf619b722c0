"""ref_optim.py: optimizers and the training step of the reference, written from the specs.

- Adam / AdamW (spec baseline-pr65-pr453.md §2.5, §4.3): bias-corrected, decoupled decay p *= 1 - lr*wd
  applied before the Adam update.
- Muon (§2.6): momentum buf = mu*buf + g, Nesterov u = g + mu*buf, optional MuonEq-R row normalisation
  (second spec §3.6), Newton-Schulz 5 steps (3.4445, -4.7750, 2.0315) on the smaller Gram side, shape
  scale sqrt(max(1, r/c)), decoupled weight decay before the update (PR65 §3.5, PR315 §4.3,
  PR1311/1392) or after every optimizer (PR187 §4.7), cautious decay (PR453 loop gate §6.2).
- one training step (§2.4-§2.7, §4.4-§4.6): A micro-steps of loss/A, global-norm clipping, the
  groups' lr = base * lr_mult, Muon momentum warmup by step index, EMA and SWA.
Everything is in the working dtype; `ns_bf16` runs Newton-Schulz in bf16 like the GPU code.
Tested against pgolf (tests/test_reference.c): Adam, Muon, momentum warmup, clipping, lr_multiplier.
Not yet tested: weight decay variants, MuonEq-R, EMA/SWA (whose EMA_START_STEP convention here,
-1 = from the initial weights, differs from pgolf's 0), late QAT, recurrence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from ref_config import Config
from ref_model import Model, RunState, param_table

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(u: torch.Tensor, steps: int, bf16: bool = False, eps: float = 1e-7) -> torch.Tensor:
    """Approximate the orthogonal polar factor of u [r, c] (spec §2.6 step 2)."""
    a, b, c = NS_COEFFS
    x = u.bfloat16() if bf16 else u
    x = x / (x.norm() + eps)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.t()
    for _ in range(steps):
        A = x @ x.t()
        Bm = b * A + c * (A @ A)
        x = a * x + Bm @ x
    if transposed:
        x = x.t()
    return x.to(u.dtype)


@dataclass
class ParamState:
    step: int = 0
    m: Optional[torch.Tensor] = None
    v: Optional[torch.Tensor] = None
    buf: Optional[torch.Tensor] = None


def adam_update(p: torch.Tensor, g: torch.Tensor, st: ParamState, lr: float, b1: float, b2: float, eps: float,
                wd: float) -> None:
    """torch.optim.Adam(W) (fused) on one tensor, in place."""
    if st.m is None:
        st.m = torch.zeros_like(p)
        st.v = torch.zeros_like(p)
    st.step += 1
    if wd != 0.0:
        p.mul_(1 - lr * wd)
    st.m.mul_(b1).add_(g, alpha=1 - b1)
    st.v.mul_(b2).addcmul_(g, g, value=1 - b2)
    bc1 = 1 - b1 ** st.step
    bc2 = 1 - b2 ** st.step
    denom = st.v.sqrt() / math.sqrt(bc2) + eps
    p.addcdiv_(st.m, denom, value=-lr / bc1)


def muon_direction(g: torch.Tensor, st: ParamState, momentum: float, steps: int, eq_r: bool,
                   ns_bf16: bool) -> torch.Tensor:
    """Momentum, Nesterov, MuonEq-R, Newton-Schulz and the shape scale: the update O (spec §2.6 steps 1-3)."""
    if st.buf is None:
        st.buf = torch.zeros_like(g)
    st.buf.mul_(momentum).add_(g)
    u = g + momentum * st.buf
    if eq_r:
        u = u / torch.sqrt((u * u).sum(dim=-1, keepdim=True) + 1e-7)
    o = newton_schulz(u, steps, ns_bf16)
    r, c = g.shape
    return o * math.sqrt(max(1.0, r / c))


@dataclass
class StepResult:
    loss: float
    grad_norm: float


class Trainer:
    """Optimizer state for every parameter plus EMA/SWA; `step` runs one full training step."""

    def __init__(self, cfg: Config, model: Model, ns_bf16: bool = False):
        self.cfg = cfg
        self.model = model
        self.ns_bf16 = ns_bf16
        self.specs = {s.name: s for s in param_table(cfg)}
        self.state: Dict[str, ParamState] = {n: ParamState() for n in self.specs}
        tied = cfg["TIE_EMBEDDINGS"]
        self.base_lr = {
            "token": cfg["TIED_EMBED_LR"] if tied else cfg["EMBED_LR"],
            "head": cfg["HEAD_LR"],
            "muon": cfg["MATRIX_LR"],
            "scalar": cfg["SCALAR_LR"],
        }
        self.late_qat = False
        self.ema_enabled = cfg["EMA_ENABLED"] or cfg["EMA_START_FRAC"] > 0 or cfg["EMA_START_STEP"] >= 0
        self.ema: Optional[Dict[str, torch.Tensor]] = None
        if self.ema_enabled and cfg.ema_start_step < 0:
            self.ema = {n: t.detach().clone() for n, t in model.p.items()}
        self.swa: Optional[Dict[str, torch.Tensor]] = None
        self.swa_count = 0

    def momentum(self, step: int) -> float:
        cfg = self.cfg
        w = cfg["MUON_MOMENTUM_WARMUP_STEPS"]
        f = min(step / w, 1.0) if w > 0 else 1.0
        return (1 - f) * cfg["MUON_MOMENTUM_WARMUP_START"] + f * cfg["MUON_MOMENTUM"]

    def recur_active(self, step: int) -> bool:
        cfg = self.cfg
        if not cfg.recur_layers or cfg["RECUR_ACTIVE"] == "0":
            return False
        return cfg["RECUR_ACTIVE"] == "1" or step >= cfg["RECUR_START_STEP"]

    def grads(self, xs: torch.Tensor, ys: torch.Tensor, st: RunState) -> (Dict[str, Optional[torch.Tensor]], float):
        """Sum over micro-steps of grad(loss_m / A); returns grads (None = unused) and the mean loss."""
        names = list(self.model.p.keys())
        leaves = [self.model.p[n] for n in names]
        A = xs.shape[0]
        total: Dict[str, Optional[torch.Tensor]] = {n: None for n in names}
        loss_sum = 0.0
        for m in range(A):
            loss = self.model.loss(xs[m], ys[m], st)
            gs = torch.autograd.grad(loss / A, leaves, allow_unused=True)
            loss_sum += float(loss.detach())
            for n, g in zip(names, gs):
                if g is not None:
                    total[n] = g if total[n] is None else total[n] + g
        return total, loss_sum / A

    def step(self, xs: torch.Tensor, ys: torch.Tensor, step: int, lr_mult: float) -> StepResult:
        """One training step: gradients of the A micro-batches xs/ys [A, B, T], then `apply`."""
        cfg = self.cfg
        thr = cfg.late_qat_threshold
        if cfg["PGOLF_LATE_QAT_ACTIVE"] and thr > 0 and lr_mult < thr and not self.late_qat:
            if cfg["LR_WARMUP_STEPS"] <= 0 or step > cfg["LR_WARMUP_STEPS"]:
                self.late_qat = True
        st = RunState(training=True, recur_active=self.recur_active(step), late_qat=self.late_qat)
        grads, loss = self.grads(xs, ys, st)
        gnorm = self.apply(grads, step, lr_mult)
        return StepResult(loss=loss, grad_norm=gnorm)

    def apply(self, grads: Dict[str, Optional[torch.Tensor]], step: int, lr_mult: float) -> float:
        """Clip (if GRAD_CLIP_NORM > 0) and apply every optimizer group to the given gradients
        (update index `step`, 0-based; lr = base lr * lr_mult). Returns the grad norm before clipping."""
        cfg = self.cfg
        p = self.model.p
        # global grad norm (torch.nn.utils.clip_grad_norm_ over every param with a grad, spec §4.4)
        present = [g for g in grads.values() if g is not None]
        gnorm = float(torch.norm(torch.stack([g.norm() for g in present]))) if present else 0.0
        if cfg["GRAD_CLIP_NORM"] > 0:
            coef = min(1.0, cfg["GRAD_CLIP_NORM"] / (gnorm + 1e-6))
            grads = {n: (None if g is None else g * coef) for n, g in grads.items()}
        mu = self.momentum(step)
        b1, b2, eps = cfg["BETA1"], cfg["BETA2"], cfg["ADAM_EPS"]
        muon_wd = cfg.muon_wd
        after = cfg["MUON_WD_PLACEMENT"] == "after"
        with torch.no_grad():
            for name, spec in self.specs.items():
                g = grads[name]
                if g is None or spec.group == "none":
                    continue
                lr = self.base_lr[spec.group] * lr_mult
                w = p[name]
                if spec.group in ("token", "scalar"):
                    adam_update(w, g, self.state[name], lr, b1, b2, eps, cfg["ADAM_WD"])
                elif spec.group == "head":
                    adam_update(w, g, self.state[name], lr, b1, b2, eps, 0.0)
                else:
                    o = muon_direction(g, self.state[name], mu, cfg["MUON_BACKEND_STEPS"], cfg["MUON_EQ_R"],
                                       self.ns_bf16)
                    if muon_wd > 0 and not after:
                        if cfg["MUON_CAUTIOUS_WD"]:
                            w.mul_(1 - lr * muon_wd * ((o * w) > 0).to(w.dtype))
                        else:
                            w.mul_(1 - lr * muon_wd)
                    w.add_(o, alpha=-lr)
                    if muon_wd > 0 and after:
                        w.mul_(1 - lr * muon_wd)
            # EMA (PR315 §4.6, PR1311 §2.6, PR1392 §3.7, PR187 §4.8)
            if self.ema_enabled:
                if self.ema is None:
                    if step >= cfg.ema_start_step:
                        self.ema = {n: t.detach().clone() for n, t in p.items()}
                else:
                    d = cfg["EMA_DECAY"]
                    for n, t in p.items():
                        self.ema[n].mul_(d).add_(t, alpha=1 - d)
            # SWA (PR315 §4.6, PR1311 §2.6): after the step counter increments
            if cfg["SWA_ENABLED"] and lr_mult < cfg["SWA_LR_THRESHOLD"] and (step + 1) % cfg["SWA_EVERY"] == 0:
                if self.swa is None:
                    self.swa = {n: t.detach().clone() for n, t in p.items()}
                    self.swa_count = 1
                else:
                    for n, t in p.items():
                        self.swa[n].add_(t)
                    self.swa_count += 1
        return gnorm

    def swa_mean(self) -> Optional[Dict[str, torch.Tensor]]:
        if self.swa is None:
            return None
        return {n: t / self.swa_count for n, t in self.swa.items()}


def lr_multiplier(cfg: Config, step: int, elapsed_ms: Optional[float] = None) -> float:
    """The lr multiplier of every group before the forward of update `step` (spec §2.7).

    MAX_WALLCLOCK_SECONDS <= 0: step-based, (ITERATIONS - step) / WARMDOWN_ITERS inside the last
    WARMDOWN_ITERS steps, else 1. Otherwise wallclock-based from elapsed_ms (training time so far):
    warm_ms = WARMDOWN_ITERS * elapsed_ms / max(step, 1), rem = max(cap_ms - elapsed_ms, 0),
    rem / warm_ms if rem <= warm_ms else 1."""
    wd = cfg["WARMDOWN_ITERS"]
    if wd <= 0:
        return 1.0
    cap = cfg["MAX_WALLCLOCK_SECONDS"]
    if cap <= 0:
        it = cfg["ITERATIONS"]
        if max(it - wd, 0) <= step < it:
            return max((it - step) / wd, 0.0)
        return 1.0
    if elapsed_ms is None:
        raise ValueError("the wallclock-based warmdown needs the elapsed training time")
    warm_ms = wd * (elapsed_ms / max(step, 1))
    rem = max(1000.0 * cap - elapsed_ms, 0.0)
    return rem / warm_ms if rem <= warm_ms else 1.0
