"""PR #1392 with depth recurrence switched on (spec §3.5: from RECUR_START_STEP the record sets
model.recur_active = True; the reference's RunState.recur_active). Everything else as rec_pr1392.py:
layer 2 (the last encoder layer) runs its damped second pass x + recur_scales.0 * (Block_2(x) - x) after
the skip push; layer 3 is listed but, a decoder layer, never recurs (recur_scales.1 gets no gradient)."""
from records.rec_pr1392 import (BATCH, PRESET, SMALL, build, loss, rec_name)  # noqa: F401

RUN_STATE = dict(recur_active=True)


def train_mode(mod, model):
    mod.CastedLinear._qat_enabled = False
    model.recur_active = True
    model.train()
