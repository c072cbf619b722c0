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
from records.common import bf16_qat_forward
from records.rec_pr1311 import (PRESET, SMALL, REF_ONLY, RECORD_ENV, BATCH, NTK_REF_LEN, BANKS,  # noqa: F401
                                build, rec_name, loss)

RUN_STATE = dict(late_qat=True)


def train_mode(mod, model):
    model.train()
    mod.CL._qat = True  # as main() at `qat:on`
    bf16_qat_forward(mod.CL, lambda: mod.CL._qat)
