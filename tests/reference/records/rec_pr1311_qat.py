"""PR #1311 with its late QAT switched on (spec pr1311-pr1392-pr187.md §2.7): the record sets the class
flag `CL._qat` once the lr scale drops below LATE_QAT_THRESHOLD (0.15) after the lr warmup; from then
on every CastedLinear in training fake-quantises its weight (STE), and in the banked model the only
CastedLinears are bigram.proj and ve_shared.proj. The reference: RunState(late_qat=True), which
quantises the side projections only under PGOLF_OPT_PARTITION=banked. Everything else as rec_pr1311.

Reproduced on the record side (spec §2.7 / §4.8 grid, ref_model.fake_quant_late): the record casts
the fake-quantised weight to x.dtype, which in the record's run is bf16 (autocast; the inputs of both
projections are rows of bf16 embedding tables), so w_q is bf16-rounded; in float64 that cast would
keep it unrounded. During CL.forward with the flag on, a float32 -> float64 `.to` (only the w_q cast:
the weight itself is already float64) is rounded through bf16 by a TorchFunctionMode. (With XCHECK_EXACT=1 the record's `self.weight.float()` of the grid stays
float32 as the reference's.)
"""
import torch
from torch.overrides import TorchFunctionMode

from records.rec_pr1311 import (PRESET, SMALL, REF_ONLY, RECORD_ENV, BATCH, NTK_REF_LEN, BANKS,  # noqa: F401
                                build, rec_name, loss, TENSOR_FLOAT)

RUN_STATE = dict(late_qat=True)


class _Bf16Wq(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float32 \
                and (torch.float64 in args[1:] or kwargs.get("dtype") == torch.float64):
            return func(args[0].bfloat16(), *args[1:], **kwargs)
        return func(*args, **kwargs)


def train_mode(mod, model):
    model.train()
    mod.CL._qat = True  # as main() at `qat:on`
    orig = mod.CL.forward
    if getattr(orig, "_xcheck_bf16_wq", False):
        return

    def forward(self, x):
        if not (mod.CL._qat and self.training):
            return orig(self, x)
        lifted, torch.Tensor.float = torch.Tensor.float, TENSOR_FLOAT  # XCHECK_EXACT: keep the fp32 grid
        try:
            with _Bf16Wq():
                return orig(self, x)
        finally:
            torch.Tensor.float = lifted

    forward._xcheck_bf16_wq = True
    mod.CL.forward = forward
