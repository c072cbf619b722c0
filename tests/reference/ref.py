#!/usr/bin/python3
"""ref.py: command-line driver of the PyTorch reference (tests/reference/, written from
../shared/spec/baseline-pr65-pr453.md, run with /usr/bin/python3 and Debian's python3-torch).

pgolf's C tests write weights, tokens and a config, run one of these subcommands and compare the
result with pgolf's own. Files are safetensors (ref_io.py); configs are JSON objects of
train_gpt.py's environment-variable names (ref_config.py). All arithmetic is in --dtype (float64
by default), so the reference is the exact-maths side of every comparison.

  grad      weights + tokens x/y [A, B, T] -> the mean loss over the A micro-batches, each
            position's loss, and every parameter's gradient of mean_m(loss_m) (spec §2.4:
            backward of loss/A per micro-step, summed), in training mode (PGOLF_QAT_MODE applies;
            --late-qat: the late-QAT flag is on; --recur: depth recurrence is on). Output: loss [1],
            per_token_loss [A,B,T], grad.<name>.
  step      weights + (tokens x/y [S, A, B, T] | fixed grads grad.<name>) -> the parameters after
            S training steps (clipping, Adam token/scalar/head, Muon with momentum warmup, the lr
            multiplier). --lr-mult a,b,... gives the multiplier of each step, else the step-based
            warmdown of the config (MAX_WALLCLOCK_SECONDS <= 0). Output: <name> (parameters),
            loss [S], grad_norm [S], lr_mult [S].
  eval      weights + val shard(s) + tokenizer -> val_loss / val_bpb (spec §1.3, §1.5, §2.8) as
            JSON; --nll FILE replaces the model's per-target losses by the float32 values in FILE
            (one per target, in order), which checks the byte accounting alone; --luts FILE uses
            those byte tables instead of building them from the tokenizer.
  luts      tokenizer -> base_bytes [N] I16, has_leading_space [N] U8, is_boundary [N] U8.
  initcheck weights + config -> checks every parameter against the baseline's init rules (spec
            §2.2): names and shapes, zeros/ones/constants exactly, normal and uniform statistics,
            bf16-representable values. Exit status 1 with one line per violation.
  train     trains on DIR/fineweb_train_*.bin with the baseline's stream and batch layout (spec
            §1.4, grad_accum 8) for --steps steps and prints tokens/s (the CPU benchmark).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ref_config import Config, load_config  # noqa: E402
from ref_eval import Luts, build_luts, eval_sliding, eval_standard, load_val_tokens, token_bytes  # noqa: E402
from ref_io import load_safetensors, load_shard, save_safetensors  # noqa: E402
from ref_model import Model, RunState, init_params, ortho_violations, param_table  # noqa: E402
from ref_optim import Trainer, lr_multiplier  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def die(msg: str) -> None:
    print(f"ref.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load_weights(path: str, cfg: Config, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    tensors, _ = load_safetensors(path)
    specs = param_table(cfg)
    names = [s.name for s in specs]
    for s in specs:  # a tensor with no elements (skip_weights [0, d] of a 1-layer model) may be left out
        if s.name not in tensors and math.prod(s.shape) == 0:
            tensors[s.name] = torch.zeros(s.shape)
    missing = [n for n in names if n not in tensors]
    extra = [n for n in tensors if n not in names]
    if missing or extra:
        die(f"{path}: weights do not match the config: missing {missing[:6]}, unexpected {extra[:6]}")
    # keep the parameter table's order; leaves that autograd differentiates
    return {n: tensors[n].to(dtype).clone().requires_grad_(True) for n in names}


def load_tokens(path: str, ndim: int) -> (torch.Tensor, torch.Tensor):
    t, _ = load_safetensors(path)
    if "x" not in t or "y" not in t:
        die(f"{path}: needs tensors x and y")
    x, y = t["x"].long(), t["y"].long()
    if x.shape != y.shape or x.ndim != ndim:
        die(f"{path}: x and y must have the same {ndim}-d shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    return x, y


def check_tokens(cfg: Config, *ts: torch.Tensor) -> None:
    V = cfg["VOCAB_SIZE"]
    for t in ts:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= V):
            die(f"token id out of range [0, {V})")


# ------------------------------------------------------------------------------------------------
def cmd_grad(a: argparse.Namespace) -> None:
    cfg = load_config(a.config)
    dtype = DTYPES[a.dtype]
    params = load_weights(a.weights, cfg, dtype)
    model = Model(cfg, params)
    x, y = load_tokens(a.tokens, 3)  # [A, B, T]
    check_tokens(cfg, x, y)
    A = x.shape[0]
    names = list(params.keys())
    leaves = [params[n] for n in names]
    grads: Dict[str, torch.Tensor] = {n: torch.zeros_like(params[n]) for n in names}
    st = RunState(training=True, late_qat=a.late_qat, recur_active=a.recur)
    losses = []
    per_tok = []
    for m in range(A):
        nll = model.token_nll(x[m], y[m], st)  # [B, T]
        loss = nll.mean()
        gs = torch.autograd.grad(loss / A, leaves, allow_unused=True)
        for n, g in zip(names, gs):
            if g is not None:
                grads[n] += g
        losses.append(float(loss.detach()))
        per_tok.append(nll.detach())
    out: Dict[str, torch.Tensor] = {
        "loss": torch.tensor([sum(losses) / A], dtype=torch.float64),
        "per_token_loss": torch.stack(per_tok).to(torch.float64),
    }
    for n in names:
        out[f"grad.{n}"] = grads[n].detach()
    save_safetensors(a.out, out)


def cmd_step(a: argparse.Namespace) -> None:
    cfg = load_config(a.config)
    dtype = DTYPES[a.dtype]
    params = load_weights(a.weights, cfg, dtype)
    model = Model(cfg, params)
    trainer = Trainer(cfg, model)
    S = a.steps
    if (a.tokens is None) == (a.grads is None):
        die("step: give exactly one of --tokens and --grads")
    if a.tokens is not None:
        x, y = load_tokens(a.tokens, 4)  # [S, A, B, T]
        check_tokens(cfg, x, y)
        if x.shape[0] < S:
            die(f"{a.tokens}: {x.shape[0]} steps of tokens, need {S}")
    else:
        g, _ = load_safetensors(a.grads)
        fixed = {}
        for n in params:
            t = g.get(f"grad.{n}")
            if t is None or tuple(t.shape) != tuple(params[n].shape):
                die(f"{a.grads}: missing or misshaped grad.{n}")
            fixed[n] = t.to(dtype)
    if a.lr_mult:
        mults = [float(v) for v in a.lr_mult.split(",")]
        if len(mults) != S:
            die(f"--lr-mult has {len(mults)} values for {S} steps")
    else:
        mults = [lr_multiplier(cfg, s) for s in range(S)]
    losses, norms = [], []
    for s in range(S):
        if a.tokens is not None:
            r = trainer.step(x[s], y[s], s, mults[s])
            losses.append(r.loss)
            norms.append(r.grad_norm)
        else:
            norms.append(trainer.apply(dict(fixed), s, mults[s]))
            losses.append(float("nan"))
    out = {n: t.detach() for n, t in params.items()}
    if trainer.ema is not None:
        out.update({f"ema.{n}": t.detach() for n, t in trainer.ema.items()})
    if trainer.swa is not None:
        out.update({f"swa_sum.{n}": t.detach() for n, t in trainer.swa.items()})
        out["swa_count"] = torch.tensor([trainer.swa_count], dtype=torch.float64)
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    out["grad_norm"] = torch.tensor(norms, dtype=torch.float64)
    out["lr_mult"] = torch.tensor(mults, dtype=torch.float64)
    save_safetensors(a.out, out)


def load_luts_file(path: str) -> Luts:
    t, _ = load_safetensors(path)
    return Luts(t["base_bytes"].numpy().astype(np.int16), t["has_leading_space"].numpy().astype(bool),
                t["is_boundary"].numpy().astype(bool))


def cmd_eval(a: argparse.Namespace) -> None:
    cfg = load_config(a.config)
    T = cfg["TRAIN_SEQ_LEN"]
    paths = sorted(glob.glob(a.val)) if any(c in a.val for c in "*?[") else [a.val]
    if not paths:
        die(f"{a.val}: no validation shards")
    val, usable = load_val_tokens(paths, T)
    if a.luts:
        luts = load_luts_file(a.luts)
    else:
        if not a.tokenizer:
            die("eval: give --tokenizer or --luts")
        luts = build_luts(a.tokenizer, cfg["VOCAB_SIZE"])
    if a.nll:
        nll = np.fromfile(a.nll, dtype="<f4").astype(np.float64)
        if nll.size != usable:
            die(f"{a.nll}: {nll.size} losses for {usable} targets")
        x, y = val[:usable], val[1:usable + 1]
        res = {"loss_sum": float(nll.sum()), "token_count": float(usable),
               "byte_count": float(token_bytes(luts, y, x).sum())}
    else:
        if not a.weights:
            die("eval: give --weights or --nll")
        torch.set_grad_enabled(False)
        params = load_weights(a.weights, cfg, DTYPES[a.dtype])
        model = Model(cfg, params)
        if a.stride:
            r = eval_sliding(model, cfg, val, usable, luts, RunState(training=False), T, a.stride, a.style,
                             a.temperature)
        else:
            r = eval_standard(model, cfg, val, usable, luts, RunState(training=False), T)
        res = {"loss_sum": r.loss_sum, "token_count": r.token_count, "byte_count": r.byte_count}
    res["val_loss"] = res["loss_sum"] / res["token_count"]
    res["val_bpb"] = (res["val_loss"] / math.log(2.0)) * (res["token_count"] / res["byte_count"])
    res["usable_tokens"] = usable
    text = json.dumps(res, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


def cmd_luts(a: argparse.Namespace) -> None:
    L = build_luts(a.tokenizer, a.size)
    save_safetensors(a.out, {"base_bytes": torch.from_numpy(L.base_bytes.astype(np.int16)),
                             "has_leading_space": torch.from_numpy(L.has_leading_space.astype(np.uint8)),
                             "is_boundary": torch.from_numpy(L.is_boundary.astype(np.uint8))})


def cmd_initcheck(a: argparse.Namespace) -> None:
    """Check each tensor against its init rule (spec §2.2). Statistical checks use bounds that a
    correct sampler fails with probability far below 1e-6 (5 standard errors)."""
    cfg = load_config(a.config)
    tensors, _ = load_safetensors(a.weights)
    specs = param_table(cfg)
    bad: List[str] = []
    names = {s.name for s in specs}
    for n in tensors:
        if n not in names:
            bad.append(f"{n}: not a parameter of this config")
    for s in specs:
        t = tensors.get(s.name)
        if t is None:
            bad.append(f"{s.name}: missing")
            continue
        if tuple(t.shape) != tuple(s.shape):
            bad.append(f"{s.name}: shape {tuple(t.shape)}, expected {s.shape}")
            continue
        w = t.double().reshape(-1)
        if not torch.equal(w, w.float().bfloat16().double()):
            bad.append(f"{s.name}: values are not bf16-representable (the records' init is)")
        kind = s.init[0]
        n = w.numel()
        if kind == "zeros" and not bool((w == 0).all()):
            bad.append(f"{s.name}: expected zeros")
        elif kind == "ones" and not bool((w == 1).all()):
            bad.append(f"{s.name}: expected ones")
        elif kind == "const":
            v = float(torch.tensor(float(s.init[1])).bfloat16().double())
            if not bool((w == v).all()):
                bad.append(f"{s.name}: expected all {v}")
        elif kind == "resid_mix":
            w2 = w.reshape(2, -1)
            if not (bool((w2[0] == 1).all()) and bool((w2[1] == 0).all())):
                bad.append(f"{s.name}: expected row 0 ones, row 1 zeros")
        elif kind in ("normal", "uniform"):
            if kind == "normal":
                std = float(s.init[1])
            else:
                bound = float(s.init[1])
                std = bound / math.sqrt(3.0)
                # bf16 rounding can move a value just past the bound by half an ulp
                if float(w.abs().max()) > bound * (1 + 2 ** -8):
                    bad.append(f"{s.name}: |w| max {float(w.abs().max()):.6g} above the bound {bound:.6g}")
                if n >= 1000 and float(w.abs().max()) < bound * (1 - 20.0 / n):
                    bad.append(f"{s.name}: |w| max {float(w.abs().max()):.6g} far below the bound {bound:.6g}")
            mean = float(w.mean())
            sd = float(w.std())
            # standard errors: mean std/sqrt(n); std ~ std*sqrt((kurt-1)/(4n)) (kurt 3 normal, 1.8 uniform)
            kurt = 3.0 if kind == "normal" else 1.8
            if abs(mean) > 5 * std / math.sqrt(n):
                bad.append(f"{s.name}: mean {mean:.6g}, expected 0 (std {std:.6g}, n {n})")
            if abs(sd - std) > 5 * std * math.sqrt((kurt - 1) / (4 * n)) + std * 2 ** -8:
                bad.append(f"{s.name}: std {sd:.6g}, expected {std:.6g} (n {n})")
        elif kind == "ortho":
            bad += ortho_violations(s.name, w, s.shape, float(s.init[1]) * float(s.init[2]))
        elif kind not in ("zeros", "ones", "const", "resid_mix"):
            bad.append(f"{s.name}: init {kind} is not checked by initcheck")
    for b in bad:
        print(f"initcheck: {b}")
    if bad:
        sys.exit(1)
    print(f"initcheck: {len(specs)} tensors ok")


# ------------------------------------------------------------------------------------------------
class TokenStream:
    """Spec §1.4: shards in sorted order from shard 0 position 0, wrapping; spans cross shard ends."""

    def __init__(self, paths: List[str]):
        self.paths = paths
        self.i = 0
        self.tok = load_shard(paths[0])
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self.pos >= len(self.tok):
                self.i = (self.i + 1) % len(self.paths)
                self.tok = load_shard(self.paths[self.i])
                self.pos = 0
                continue
            k = min(n, len(self.tok) - self.pos)
            out.append(self.tok[self.pos:self.pos + k])
            self.pos += k
            n -= k
        return np.concatenate(out)


def cmd_train(a: argparse.Namespace) -> None:
    cfg = load_config(a.config)
    torch.set_num_threads(a.threads)
    dtype = DTYPES[a.dtype]
    if a.weights:
        params = load_weights(a.weights, cfg, dtype)
    else:
        params = {n: t.to(dtype).requires_grad_(True) for n, t in init_params(cfg, cfg["SEED"], dtype).items()}
    model = Model(cfg, params)
    trainer = Trainer(cfg, model)
    paths = sorted(glob.glob(os.path.join(a.data, "fineweb_train_*.bin")))
    if not paths:
        die(f"{a.data}: no fineweb_train_*.bin shards")
    stream = TokenStream(paths)
    T, A = cfg["TRAIN_SEQ_LEN"], 8  # world size 1: grad_accum = 8
    local = cfg["TRAIN_BATCH_TOKENS"] // A
    if local % T:
        die("TRAIN_BATCH_TOKENS / 8 must be a multiple of TRAIN_SEQ_LEN")
    t_total = 0.0
    tokens_total = 0
    for s in range(a.steps):
        xs, ys = [], []
        for _ in range(A):
            span = stream.take(local + 1)
            xs.append(torch.from_numpy(span[:-1].reshape(-1, T)))
            ys.append(torch.from_numpy(span[1:].reshape(-1, T)))
        x, y = torch.stack(xs), torch.stack(ys)
        t0 = time.perf_counter()
        r = trainer.step(x, y, s, lr_multiplier(cfg, s))
        dt = time.perf_counter() - t0
        if s >= a.skip:  # the first steps warm up allocators and caches
            t_total += dt
            tokens_total += A * local
        print(f"step:{s + 1}/{a.steps} train_loss:{r.loss:.4f} step_ms:{1000 * dt:.1f}", flush=True)
    if tokens_total:
        print(f"tokens_per_s:{tokens_total / t_total:.1f}")
    if a.out:
        save_safetensors(a.out, {n: t.detach() for n, t in params.items()})


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser, weights_required: bool = True) -> None:
        p.add_argument("--config", required=True, help="JSON object of train_gpt.py env names")
        p.add_argument("--weights", required=weights_required, help="safetensors of the parameters")
        p.add_argument("--dtype", choices=list(DTYPES), default="float64")

    p = sub.add_parser("grad")
    common(p)
    p.add_argument("--tokens", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--late-qat", action="store_true", help="the late-QAT flag is on (its grid in every CastedLinear)")
    p.add_argument("--recur", action="store_true", help="depth recurrence (RECUR_LAYERS) is active")
    p.set_defaults(fn=cmd_grad)

    p = sub.add_parser("step")
    common(p)
    p.add_argument("--tokens")
    p.add_argument("--grads")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--lr-mult", default="")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_step)

    p = sub.add_parser("eval")
    common(p, weights_required=False)
    p.add_argument("--val", required=True, help="a shard or a glob of shards")
    p.add_argument("--tokenizer")
    p.add_argument("--luts")
    p.add_argument("--nll")
    p.add_argument("--out")
    p.add_argument("--stride", type=int, default=0, help="sliding-window eval with this stride (0: standard)")
    p.add_argument("--style", default="exact", help="sliding windows: exact, pr65, pr315, pr187")
    p.add_argument("--temperature", type=float, default=1.0)
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser("luts")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_luts)

    p = sub.add_parser("initcheck")
    p.add_argument("--config", required=True)
    p.add_argument("--weights", required=True)
    p.set_defaults(fn=cmd_initcheck)

    p = sub.add_parser("train")
    common(p, weights_required=False)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", type=int, default=1, help="steps excluded from the tokens/s timing")
    p.add_argument("--out")
    p.set_defaults(fn=cmd_train)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except (ValueError, OSError) as e:
        die(str(e))


if __name__ == "__main__":
    main()
