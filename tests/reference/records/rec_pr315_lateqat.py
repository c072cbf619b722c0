"""PR #315 with its late QAT switched on, as it actually behaved (spec baseline-pr65-pr453.md §4.8):
LATE_QAT=1 (the preset), and main() sets the class flag `CastedLinear._qat_enabled = True` at the
top of the first step whose lr scale is below QAT_THRESHOLD (log `late_qat:enabled step:N scale:S`).
But the training forward is the torch.compile graph traced at the priming steps, with the flag then
False baked in, so the STE branch never runs (the record README's post-hoc note): the effective
model does not fake-quantise. pgolf follows that (docs/seeds.md, PR #315 "late QAT" row;
PGOLF_LATE_QAT_ACTIVE=0), and so does the reference: its trainer (ref_optim) leaves
RunState.late_qat False unless PGOLF_LATE_QAT_ACTIVE=1.

Reproduced on the record side: train_mode() sets the class flag as main() does, and the model's
forward (the compiled module of main()) runs with the flag value of its first trace, False (what
main() set before compiling: QAT_ENABLED 0), restored afterwards; this stands for the graph that
torch.compile baked. Without that, the record's eager code would fake-quantise (the intended grid,
checked by rec_pr315_qat_active.py). Everything else as rec_pr315.
"""
from records.rec_pr315 import (PRESET, SMALL, REF_ONLY, RECORD_ENV, BATCH, NTK_REF_LEN,  # noqa: F401
                               build as _build, rec_name, loss as _loss)

RUN_STATE = dict(late_qat=False)  # ref_optim with PGOLF_LATE_QAT_ACTIVE=0: the flag never reaches the model
_TRACED = {}


def build(mod, cfg):
    m = _build(mod, cfg)
    _TRACED["flag"] = mod.CastedLinear._qat_enabled  # False: main() sets it from QAT_ENABLED before compiling
    return m


def train_mode(mod, model):
    model.train()
    mod.CastedLinear._qat_enabled = True  # as main() at `late_qat:enabled`


def loss(mod, model, x, y):
    assert mod.CastedLinear._qat_enabled, "late QAT flag not set"
    live = mod.CastedLinear._qat_enabled
    mod.CastedLinear._qat_enabled = _TRACED["flag"]  # the compiled graph's baked-in value
    try:
        return _loss(mod, model, x, y)
    finally:
        mod.CastedLinear._qat_enabled = live
