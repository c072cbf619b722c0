"""The baseline train_gpt.py (spec baseline-pr65-pr453.md §2) at reduced size."""
PRESET = None
SMALL = dict(VOCAB_SIZE=1024, NUM_LAYERS=5, MODEL_DIM=64, NUM_HEADS=4, NUM_KV_HEADS=2, MLP_MULT=2,
             TRAIN_SEQ_LEN=32)
BATCH = (2, 32)

from records.common import rec_name, train_mode  # noqa: E402,F401


def build(mod, cfg):
    a = mod.Hyperparameters()
    return mod.GPT(vocab_size=a.vocab_size, num_layers=a.num_layers, model_dim=a.model_dim, num_heads=a.num_heads,
                   num_kv_heads=a.num_kv_heads, mlp_mult=a.mlp_mult, tie_embeddings=a.tie_embeddings,
                   tied_embed_init_std=a.tied_embed_init_std, logit_softcap=a.logit_softcap, rope_base=a.rope_base,
                   qk_gain_init=a.qk_gain_init)


def loss(mod, model, x, y):
    return model(x, y)
