"""PR #1392 late in training: recurrence on and late QAT on (spec §3.7: below lr scale 0.15 main() sets
CastedLinear._qat_enabled; the reference's RunState.late_qat). In the banked model the only CastedLinear
is ve_shared.proj, so only its forward weight becomes the STE grid value clamp(round(w/s), -31, 31)*s,
s = max(rowmax/31, 1/31) (the reference: side projections only, PGOLF_LATE_QAT_CLAMP_LOW=-31).

Reproduced on the record side: under autocast the record's `(q*s).to(x.dtype)` is a bf16 rounding (x is
bf16), which ref_model.fake_quant_late reproduces; run in float64 it would be exact, so during
CastedLinear.forward Tensor.to rounds non-parameter float64 results through bf16 (the weight's own
`.to(x.dtype)` is untouched; under no_grad, so the STE gradient is unchanged). The grid is computed in
float64 here and in float32 by the reference (the record: float32), which can move a value across a bf16
rounding boundary only in rare cases.

Note: pgolf does not apply late QAT (docs/seeds.md: "inert ... logs the switch only"); this variant
checks ref_model's late-QAT path against the record, not pgolf."""
import torch
from torch import nn

from records import rec_pr1392 as base
from records.rec_pr1392 import BATCH, PRESET, SMALL, build, rec_name  # noqa: F401

RUN_STATE = dict(recur_active=True, late_qat=True)


def train_mode(mod, model):
    mod.CastedLinear._qat_enabled = True
    model.recur_active = True
    model.train()


def loss(mod, model, x, y):
    orig_fwd, orig_to = mod.CastedLinear.forward, torch.Tensor.to

    def to_bf16(t, *a, **k):
        out = orig_to(t, *a, **k)
        if not isinstance(t, nn.Parameter) and out.dtype == torch.float64:
            out = orig_to(orig_to(out, torch.bfloat16), torch.float64)
        return out

    def forward(self, inp):
        torch.Tensor.to = to_bf16
        try:
            return orig_fwd(self, inp)
        finally:
            torch.Tensor.to = orig_to

    mod.CastedLinear.forward = forward
    try:
        return base.loss(mod, model, x, y)
    finally:
        mod.CastedLinear.forward = orig_fwd
