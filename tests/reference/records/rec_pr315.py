"""PR #315 (spec baseline-pr65-pr453.md §4; model §4.2) at reduced size, preset configs/pr315.env.

Every model feature of the preset runs: 6 layers (U-Net 3 + 3), XSA on the last 2 (blocks 4, 5; the
others without), partial RoPE 8 of head dim 16 with the NTK base, LN scale, SmearGate after the norm,
the XOR BigramHashEmbedding with a projection (BIGRAM_DIM 32 != MODEL_DIM 64), GQA 4/2, MLP 3x
ReLU^2. EMA, weight decay and the gradient clip are optimizer-side and not part of this check.
Late QAT (LATE_QAT=1 in the preset, switched on during training) is checked by rec_pr315_lateqat.py
(the record's effective behaviour, spec §4.8: inert) and rec_pr315_qat_active.py (the intended
grid, pgolf's PGOLF_LATE_QAT_ACTIVE=1).

NTK RoPE: the record's Rotary is built with a hard-coded train_seq_len = 1024 and the record always
runs at T = 2048 > 1024, so the NTK base is always on (spec §4.2). At T = 32 that path would not run,
so both sides use a reference length of 16 (< T): PGOLF_ROPE_NTK_REF_LEN=16 on the reference,
`rotary.train_seq_len = 16` on every record block (build()).

Record side, as xcheck.py's docstring prescribes for the RoPE tables ("both sides build them in
float64"): the record's NTK path builds inv_freq and the positions with an explicit float32 dtype
(`torch.arange(..., dtype=torch.float32)`), which `.double()` cannot lift; during Rotary.forward
only, a float32 `torch.arange` is made float64. (The bf16 rounding of the real run's tables is
checked by pgolf's own tests.) The logits' `.float()` before the cross entropy stays as written.
Its float32 rounding is the remaining noise, largest on the scalar gradients that sum many
cancelling terms (bigram.scale): ~1e-7 over most seeds, 2.6e-6 at seed 3.

XCHECK_EXACT=1 (this adapter and its variants): lift that `.float()` of float64 tensors to float64
during the forward too, to see the agreement without the noise.
"""
from records.common import exact, f64_aranges, rec_name, train_mode  # noqa: F401

PRESET = "configs/pr315.env"
SMALL = dict(VOCAB_SIZE=256, NUM_LAYERS=6, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=3.0,
             TRAIN_SEQ_LEN=32, EVAL_SEQ_LEN=32, XSA_LAST_N=2, ROPE_DIMS=8, BIGRAM_VOCAB_SIZE=64, BIGRAM_DIM=32)
REF_ONLY = dict(PGOLF_ROPE_NTK_REF_LEN=16)
RECORD_ENV = {}
RUN_STATE = {}
BATCH = (2, 32)
NTK_REF_LEN = 16


def build(mod, cfg):
    a = mod.Hyperparameters()
    mod.CastedLinear._qat_enabled = a.qat_enabled  # as main(): False (QAT_ENABLED 0)
    m = mod.GPT(vocab_size=a.vocab_size, num_layers=a.num_layers, model_dim=a.model_dim, num_heads=a.num_heads,
                num_kv_heads=a.num_kv_heads, mlp_mult=a.mlp_mult, tie_embeddings=a.tie_embeddings,
                tied_embed_init_std=a.tied_embed_init_std, logit_softcap=a.logit_softcap, rope_base=a.rope_base,
                qk_gain_init=a.qk_gain_init, mtp_num_heads=a.mtp_num_heads, mtp_loss_weight=a.mtp_loss_weight,
                bigram_vocab_size=a.bigram_vocab_size, bigram_dim=a.bigram_dim, xsa_last_n=a.xsa_last_n,
                rope_dims=a.rope_dims, ln_scale=a.ln_scale)
    for b in m.blocks:  # reduced NTK reference length (see the docstring)
        b.attn.rotary.train_seq_len = NTK_REF_LEN
    _patch_rotary(mod)
    return m


def _patch_rotary(mod):
    orig = mod.Rotary.forward
    if getattr(orig, "_xcheck_f64", False):
        return

    def forward(self, *args, **kwargs):
        with f64_aranges():
            return orig(self, *args, **kwargs)

    forward._xcheck_f64 = True
    mod.Rotary.forward = forward


def loss(mod, model, x, y):
    with exact():
        return model(x, y)
