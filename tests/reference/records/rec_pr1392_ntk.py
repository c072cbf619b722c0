"""PR #1392 with recurrence on at a sequence length above the Rotary reference length 1024, so that the
record's NTK RoPE path runs (spec §3.4 / baseline spec §4.2: base' = base * (T/1024)^(rd/(rd-2)),
computed in forward; the preset's TRAIN_SEQ_LEN is 2048). One sequence of 1056 tokens; everything else as
rec_pr1392.py (the record's own formula runs in float64 there, see _Torch64)."""
from records.rec_pr1392 import PRESET, build, loss, rec_name  # noqa: F401
from records.rec_pr1392 import SMALL as _SMALL

SMALL = dict(_SMALL, TRAIN_SEQ_LEN=1056, EVAL_SEQ_LEN=1056)
RUN_STATE = dict(recur_active=True)
BATCH = (1, 1056)


def train_mode(mod, model):
    mod.CastedLinear._qat_enabled = False
    model.recur_active = True
    model.train()
