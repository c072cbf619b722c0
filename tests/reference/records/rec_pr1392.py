"""PR #1392's train_gpt.py (spec pr1311-pr1392-pr187.md §3; preset configs/pr1392.env) at reduced size,
recurrence not yet switched on (steps before RECUR_START_STEP). rec_pr1392_recur.py: recurrence on.

Reduced layout, the preset's scaled down: 6 layers (encoder 0-2, decoder 3-5), XSA on all 6, partial
RoPE 8 of head dim 16, VE (dim 16, kv dim 32, so ve_shared.proj exists) in the last two layers 4, 5,
parallel residuals from layer 4 (decoder only, as 7-10 of 11), RECUR_LAYERS=2,3: layer 2 is the last
encoder layer (the preset's 4) and layer 3 a listed decoder layer that never recurs (the preset's 5).
BIGRAM_VOCAB_SIZE=0 on both sides: the record's default is 2048, run_pgolf.sh sets 0 (spec §3.2), the
preset leaves it at pgolf's default 0.

Parameter banks. The record keeps the block matrices in four banks, the reference per matrix:
    qo_bank[i]   = blocks.i.attn.c_q.weight     qo_bank[L+i]  = blocks.i.attn.proj.weight
    kv_bank[i]   = blocks.i.attn.c_k.weight     kv_bank[L+i]  = blocks.i.attn.c_v.weight
    mlp_up_bank[i] = blocks.i.mlp.fc.weight     mlp_down_bank[i] = blocks.i.mlp.proj.weight
(the record's own _unbank_state_dict, which build() calls to derive this map). build() takes the four
bank Parameters off the record's GPT and registers one leaf Parameter per matrix under the reference's
name (small holder modules blocks.i.attn.c_q etc.; the record's Blocks never look at them); loss()
stacks them back into plain-tensor banks before calling the record's forward, which is unchanged. The
gradient of each leaf is then exactly its slice of the record's bank gradient, so rec_name is the
identity and xcheck.py's one-to-one copy and comparison fit without a harness change.

Nothing of the record is re-implemented. main()'s bf16 casts are left out (the harness runs both sides
in float64); CastedLinear._qat_enabled is False, as main() sets it until late QAT (rec_pr1392_qat.py).
Reproduced on the record side (float64_record, during build and forward only): its float32 RoPE
arithmetic runs in float64 (xcheck.py's float64 tables on both sides), and its `logits.float()` before
the cross entropy keeps float64 (exact in the real run: bf16 logits upcast). Without these two the
agreement is ~3e-7 on most tensors and up to 3e-6 on small-norm ones (blocks.3.attn.q_gain).
Variants: rec_pr1392_recur.py (recurrence on), rec_pr1392_ntk.py (recurrence on, T 1056 > 1024: the NTK
RoPE path), rec_pr1392_qat.py (recurrence and late QAT on).
"""
import contextlib

import torch
from torch import nn

PRESET = "configs/pr1392.env"
SMALL = dict(NUM_LAYERS=6, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=4.0, TRAIN_SEQ_LEN=32,
             EVAL_SEQ_LEN=32, XSA_LAST_N=6, ROPE_DIMS=8, VE_DIM=16, VE_LAYERS="4,5", PARALLEL_START_LAYER=4,
             RECUR_LAYERS="2,3", BIGRAM_VOCAB_SIZE=0)
RUN_STATE = dict(recur_active=False)
BATCH = (2, 32)

BANKS = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")


def build_gpt(mod):
    a = mod.Hyperparameters()
    return mod.GPT(vocab_size=a.vocab_size, num_layers=a.num_layers, model_dim=a.model_dim, num_heads=a.num_heads,
                   num_kv_heads=a.num_kv_heads, mlp_mult=a.mlp_mult, tie_embeddings=a.tie_embeddings,
                   tied_embed_init_std=a.tied_embed_init_std, logit_softcap=a.logit_softcap, rope_base=a.rope_base,
                   qk_gain_init=a.qk_gain_init, mtp_num_heads=a.mtp_num_heads, mtp_loss_weight=a.mtp_loss_weight,
                   bigram_vocab_size=a.bigram_vocab_size, bigram_dim=a.bigram_dim, xsa_last_n=a.xsa_last_n,
                   rope_dims=a.rope_dims, ln_scale=a.ln_scale, dtg=a.dtg_enabled, ve_enabled=a.ve_enabled,
                   ve_dim=a.ve_dim, ve_layers=a.ve_layers, gated_attention=a.gated_attention,
                   value_residual=a.value_residual, recur_layers=a.recur_layers,
                   parallel_start_layer=a.parallel_start_layer, trigram=a.trigram_enabled)


def unbank(mod, model):
    """Replace the banks by per-matrix leaves named as the reference; model._bank_slots[bank] lists the
    leaves in bank order."""
    n = model.num_layers
    # the record's own unbanking, applied to index tensors: name -> (bank, slot)
    idx = {b: torch.arange(getattr(model, b).shape[0]) for b in BANKS}
    slots = {}
    for b in BANKS:
        for name, t in mod._unbank_state_dict({b: idx[b]}, n).items():
            slots[name] = (b, int(t))
    model._bank_slots = {b: [None] * getattr(model, b).shape[0] for b in BANKS}
    for name, (b, k) in slots.items():
        bank = getattr(model, b)
        parent = model.get_submodule(name.rsplit(".", 2)[0])  # blocks.i.attn / blocks.i.mlp
        holder = nn.Module()
        holder.weight = nn.Parameter(bank.data[k].clone())
        leaf = name.rsplit(".", 2)[1]
        assert not hasattr(parent, leaf), name
        setattr(parent, leaf, holder)
        model._bank_slots[b][k] = name
    for b in BANKS:
        assert all(s is not None for s in model._bank_slots[b]), b
        del model._parameters[b]


def restack(model):
    for b in BANKS:
        setattr(model, b, torch.stack([model.get_parameter(nm) for nm in model._bank_slots[b]]))


class _Torch64:
    """The record module's `torch` while it builds and runs the model: torch itself, except that
    torch.float32 is float64. The record's RoPE computes inv_freq (at construction) and the NTK tables
    (in forward, T > 1024) with explicit dtype=torch.float32; xcheck.py compares float64 RoPE tables on
    both sides (ref_model.EXACT_ROPE), so the record's own formulas run in float64. No other float32
    appears in the record's forward (its constructors' float32 parameters are cast by .double())."""

    def __getattr__(self, name):
        return torch.float64 if name == "float32" else getattr(torch, name)


@contextlib.contextmanager
def float64_record(mod):
    """_Torch64 for mod.torch, and Tensor.float() leaving float64 tensors as they are: the record's
    `logits.float()` before the cross entropy is exact in the real run (bf16 logits under autocast) but
    would round the float64 logits here; the training forward has no other .float() (the QAT branch of
    CastedLinear is off)."""
    orig_torch, orig_float = mod.torch, torch.Tensor.float
    mod.torch = _Torch64()
    torch.Tensor.float = lambda t, *a, **k: t if t.dtype == torch.float64 else orig_float(t, *a, **k)
    try:
        yield
    finally:
        mod.torch, torch.Tensor.float = orig_torch, orig_float


def build(mod, cfg):
    with float64_record(mod):
        model = build_gpt(mod)
    assert all(b.attn.rotary.inv_freq.dtype == torch.float64 for b in model.blocks)
    unbank(mod, model)
    return model


def rec_name(ref_name):
    return ref_name


def train_mode(mod, model):
    mod.CastedLinear._qat_enabled = False
    model.recur_active = False
    model.train()


def loss(mod, model, x, y):
    restack(model)
    with float64_record(mod):
        return model(x, y)
