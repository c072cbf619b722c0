"""PR #315's late QAT as its code intends it (spec baseline-pr65-pr453.md §4.8, "the intended
behaviour"), which the record never ran (torch.compile baked the flag off; rec_pr315_lateqat.py checks
that effective behaviour) but pgolf offers with PGOLF_LATE_QAT_ACTIVE=1: once the class flag
`CastedLinear._qat_enabled` is set, every CastedLinear in training (block matrices and bigram.proj;
not the tied head, not the embeddings) fake-quantises its weight with the STE on the grid
s = max(rowmax|W|/31, 1/31) of the fp32 master, codes clamp(round(W/s), -32, 31), bf16(q*s). The
reference: PGOLF_LATE_QAT_ACTIVE=1, PGOLF_LATE_QAT_CLAMP_LOW=-32 and RunState(late_qat=True)
(ref_model.fake_quant_late). Everything else as rec_pr315.

Reproduced on the record side (spec §4.8 "cast to bf16", ref_model.fake_quant_late): the record casts
the grid to x.dtype, which in its run is bf16 (autocast; bigram.proj reads rows of the bf16 table),
so w_q is bf16-rounded; in float64 that cast would keep it unrounded. During a training
CastedLinear.forward with the flag on, a float32 -> float64 `.to` (only the w_q cast: the weight is
already float64) is rounded through bf16 by a TorchFunctionMode. (With XCHECK_EXACT=1 the grid's
`self.weight.float()` stays float32, as the reference's.)
"""
from records.common import bf16_qat_forward
from records.rec_pr315 import (PRESET, SMALL, RECORD_ENV, BATCH, NTK_REF_LEN,  # noqa: F401
                               REF_ONLY as _REF_ONLY, build, rec_name, loss)

REF_ONLY = dict(_REF_ONLY, PGOLF_LATE_QAT_ACTIVE=1, PGOLF_LATE_QAT_CLAMP_LOW=-32)
RUN_STATE = dict(late_qat=True)


def train_mode(mod, model):
    model.train()
    mod.CastedLinear._qat_enabled = True  # as main() at `late_qat:enabled`, here really running
    bf16_qat_forward(mod.CastedLinear, lambda: mod.CastedLinear._qat_enabled)
