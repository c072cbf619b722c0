"""PR #1311 (spec pr1311-pr1392-pr187.md §2; forward §2.4) at reduced size, preset configs/pr1311.env.

Every model feature of the preset runs: 6 layers (U-Net 3 + 3), XSA on the last 3 (blocks 3, 4, 5),
value embeddings in layers 2 (encoder, no XSA) and 5 (decoder, XSA) with a projection (VE_DIM 16 !=
kv dim 32), partial RoPE 8 of head dim 16, LN scale, SmearGate after the norm, the XOR bigram with
a projection (BIGRAM_DIM 32 != MODEL_DIM 64), GQA 4/2, LeakyReLU(0.5)^2 MLP 3x. Late QAT (the preset's
LATE_QAT_THRESHOLD, switched on during training) is checked by rec_pr1311_qat.py.

Banks: the record trains four 3-D banks (qo_bank = c_q of every layer then attn.proj, kv_bank = c_k
then c_v, mlp_up_bank, mlp_down_bank; spec §2.3). xcheck copies parameters by name, so build()
replaces each bank Parameter by a ParameterList of its slices (`qo_bank_slices.N`, ...) and loss()
stacks them back into the bank attributes the record's forward reads; the gradient of slice N is
the bank gradient's slice N. rec_name maps the reference's unbanked names to the slices as the
record's own _unbank does (spec §2.8 step 1), and its other spellings (bigram.emb/sc,
ve_shared.emb/sc, ve_scales).

NTK RoPE: the record's Rotary is built with a hard-coded reference length 1024 and always runs at
T = 2048 (spec §2.4). At T = 32 that path would not run, so both sides use a reference length of 16
(< T): PGOLF_ROPE_NTK_REF_LEN=16 on the reference, `rotary.tsl = 16` on every record block. The
record builds those tables in float32 (its own explicit dtype), the reference in float64.

XCHECK_EXACT=1 (this adapter only): lift the record's two float32 roundings that float64 cannot
remove (the logits' `.float()` before the cross entropy and the float32 NTK tables) to float64 during
the forward, to see the agreement without their noise (then exactly 0, also with late QAT). The
default check runs the record as written; its worst difference is that noise, largest on the scalar
gradients that sum many cancelling terms (bigram.sc, ve_scales): ~2e-7 to 3e-6 over seeds 1-10
(seed 1: 1.9e-7).
"""
import torch

from records.common import exact

PRESET = "configs/pr1311.env"
SMALL = dict(VOCAB_SIZE=256, NUM_LAYERS=6, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=3,
             TRAIN_SEQ_LEN=32, EVAL_SEQ_LEN=32, XSA_LAST_N=3, ROPE_DIMS=8, BIGRAM_VOCAB_SIZE=64, BIGRAM_DIM=32,
             VE_DIM=16, VE_LAYERS="2,5")
REF_ONLY = dict(PGOLF_ROPE_NTK_REF_LEN=16)
RECORD_ENV = {}
RUN_STATE = {}
BATCH = (2, 32)
NTK_REF_LEN = 16
BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
_L = [0]


def build(mod, cfg):
    a = mod.H()
    mod.CL._qat = False  # as main()
    m = mod.GPT(a).bfloat16()  # main()'s dtype policy (xcheck then casts everything to float64)
    for b in BANKS:
        getattr(m, b).data = getattr(m, b).data.float()
    for sub in m.modules():
        if isinstance(sub, mod.CL):
            sub.float()
    mod.fix_fp32(m)
    for blk in m.blocks:  # reduced NTK reference length (see the docstring)
        blk.attn.rotary.tsl = NTK_REF_LEN
    _L[0] = m.nl
    for b in BANKS:  # the banks as lists of slices (see the docstring)
        bank = m._parameters.pop(b)
        setattr(m, b + "_slices", torch.nn.ParameterList(
            [torch.nn.Parameter(bank.data[i].clone()) for i in range(bank.shape[0])]))
    return m


def rec_name(ref_name):
    L = _L[0]
    p = ref_name.split(".")
    if p[0] == "blocks" and p[-1] == "weight":
        i, w = int(p[1]), ".".join(p[2:-1])
        slot = {"attn.c_q": ("qo_bank", i), "attn.proj": ("qo_bank", L + i), "attn.c_k": ("kv_bank", i),
                "attn.c_v": ("kv_bank", L + i), "mlp.fc": ("mlp_up_bank", i), "mlp.proj": ("mlp_down_bank", i)}[w]
        return f"{slot[0]}_slices.{slot[1]}"
    fixed = {"bigram.embed.weight": "bigram.emb.weight", "bigram.scale": "bigram.sc",
             "ve_shared.embed.weight": "ve_shared.emb.weight", "ve_shared.scale": "ve_shared.sc"}
    if ref_name in fixed:
        return fixed[ref_name]
    if ref_name.startswith("ve_layer_scales."):
        return "ve_scales." + ref_name.split(".", 1)[1]
    return ref_name


def train_mode(mod, model):
    mod.CL._qat = False
    model.train()


def loss(mod, model, x, y):
    for b in BANKS:
        setattr(model, b, torch.stack(list(getattr(model, b + "_slices"))))
    with exact():
        return model(x, y)
