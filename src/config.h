/* config.h: pgolf's one configuration vocabulary. Every key is listed once, in PG_CONFIG_KEYS,
 * with its type, default, range and help; the struct, the parser, validation, `--help` and the
 * resolved-config dump are all generated from that list. Names and defaults are train_gpt.py's
 * environment variables (spec §2.1); pgolf's own additions start with PGOLF_ or are the records'
 * names. Sources, lowest priority first: defaults, preset files (KEY=VALUE lines), environment. */
#ifndef PGOLF_CONFIG_H
#define PGOLF_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* X(type, KEY, field, default, min, max, help)   type: STR, INT, FLOAT, BOOL */
#define PG_CONFIG_KEYS(X)                                                                          \
    /* data and run */                                                                             \
    X(STR, DATA_PATH, data_path, "./data/datasets/fineweb10B_sp1024", 0, 0,                        \
      "directory holding fineweb_train_*.bin and fineweb_val_*.bin shards")                        \
    X(STR, TOKENIZER_PATH, tokenizer_path, "./data/tokenizers/fineweb_1024_bpe.model", 0, 0,       \
      "SentencePiece .model used for the val_bpb byte counts")                                     \
    X(STR, RUN_ID, run_id, "", 0, 0, "log name logs/$RUN_ID.txt (default: a random uuid4)")        \
    X(INT, SEED, seed, "1337", 0, 4294967295.0, "random seed of the initialisation")               \
    X(INT, VAL_BATCH_SIZE, val_batch_size, "524288", 1, 1e12, "validation tokens per batch (all ranks)") \
    X(INT, VAL_LOSS_EVERY, val_loss_every, "1000", 0, 1e12, "validate every N steps (0: only at the end)") \
    X(INT, TRAIN_LOG_EVERY, train_log_every, "200", 0, 1e12, "log train_loss every N steps (and steps 1-10)") \
    X(INT, ITERATIONS, iterations, "20000", 0, 1e12, "number of optimizer steps")                  \
    X(INT, WARMDOWN_ITERS, warmdown_iters, "1200", 0, 1e12, "linear lr warmdown length in steps")  \
    X(INT, WARMUP_STEPS, warmup_steps, "20", 0, 1e6,                                               \
      "priming steps run then undone (weights, optimizer, data restored), as train_gpt.py")        \
    X(BOOL, PGOLF_PRIMING_KEEPS_ADAM, priming_keeps_adam, "0", 0, 1,                               \
      "PR #1311: after priming only the weights and data are restored; the Adam(W) moments and step " \
      "counts carry over (Muon momentum restarts, as the record's sharded buffers on 8 GPUs)")     \
    X(INT, TRAIN_BATCH_TOKENS, train_batch_tokens, "524288", 1, 1e12, "tokens per optimizer step (all ranks)") \
    X(INT, TRAIN_SEQ_LEN, train_seq_len, "1024", 2, 1048576, "training sequence length")           \
    X(FLOAT, MAX_WALLCLOCK_SECONDS, max_wallclock_seconds, "600.0", -1e18, 1e18,                  \
      "training time cap in seconds (<= 0: no cap, step-based warmdown)")                           \
    X(FLOAT, GPTQ_RESERVE_SECONDS, gptq_reserve_seconds, "0.0", 0, 1e9,                            \
      "seconds of MAX_WALLCLOCK_SECONDS kept for the export (GPTQ): training and its warmdown stop that " \
      "much earlier (later records: 4-13)")                                                       \
    /* model shape */                                                                              \
    X(FLOAT, QK_GAIN_INIT, qk_gain_init, "1.5", -1e6, 1e6, "initial per-head query gain")          \
    X(INT, VOCAB_SIZE, vocab_size, "1024", 2, 65536, "vocabulary size (must equal the tokenizer's)") \
    X(INT, NUM_LAYERS, num_layers, "9", 1, 256, "transformer blocks")                              \
    X(INT, NUM_KV_HEADS, num_kv_heads, "4", 1, 256, "key/value heads (GQA)")                       \
    X(INT, MODEL_DIM, model_dim, "512", 2, 65536, "model width")                                   \
    X(INT, NUM_HEADS, num_heads, "8", 1, 256, "query heads")                                       \
    X(FLOAT, MLP_MULT, mlp_mult, "2", 0.0001, 64, "MLP hidden = int(MLP_MULT * MODEL_DIM)")        \
    X(BOOL, TIE_EMBEDDINGS, tie_embeddings, "1", 0, 1, "tie the output head to the token embedding") \
    X(FLOAT, ROPE_BASE, rope_base, "10000.0", 1e-6, 1e18, "RoPE base")                             \
    X(FLOAT, LOGIT_SOFTCAP, logit_softcap, "30.0", 1e-6, 1e18, "logits = c*tanh(z/c)")             \
    /* the records' model features (defaults: the baseline, every feature off; docs/seeds.md) */   \
    X(BOOL, USE_SMEARGATE, use_smeargate, "0", 0, 1, "PR #65 SmearGate (= PGOLF_SMEAR_MODE=pre)")   \
    X(STR, PGOLF_SMEAR_MODE, smear_mode, "", 0, 0,                                                 \
      "SmearGate: off; pre (PR #65: before the embedding norm, g*x+(1-g)*x_prev, gate init 3); "    \
      "post (PR #315: after the norm, (1-g)*x+g*x_prev, gate init 0); empty: pre if USE_SMEARGATE") \
    X(INT, BIGRAM_HASH_BUCKETS, bigram_hash_buckets, "0", 0, 1e8,                                  \
      "PR #65 BigramHash buckets, bucket = (prev*92821 + cur) mod B, prev = 0 at t = 0 (0: off)")   \
    X(INT, BIGRAM_HASH_DIM, bigram_hash_dim, "128", 1, 65536, "PR #65 BigramHash table width")     \
    X(INT, BIGRAM_VOCAB_SIZE, bigram_vocab_size, "0", 0, 1e8,                                      \
      "PR #315 bigram buckets Vb: (36313*cur ^ 27191*prev) mod (Vb-1), Vb-1 at t = 0 (0: off)")     \
    X(INT, BIGRAM_DIM, bigram_dim, "128", 1, 65536, "PR #315 bigram width (no projection if = MODEL_DIM)") \
    X(INT, XSA_LAST_N, xsa_last_n, "0", 0, 1e6, "PR #315 XSA on the last N layers (0: off; >= NUM_LAYERS: all)") \
    X(INT, ROPE_DIMS, rope_dims, "0", 0, 65536, "PR #315 partial RoPE: rotate the first ROPE_DIMS dims of each head (0: all)") \
    X(BOOL, LN_SCALE, ln_scale, "0", 0, 1, "PR #315: scale the normalised sublayer inputs of layer i by 1/sqrt(i+1)") \
    X(BOOL, PGOLF_ROPE_NTK, rope_ntk, "0", 0, 1,                                                    \
      "PR #315 Rotary: when TRAIN_SEQ_LEN > PGOLF_ROPE_NTK_REF_LEN, base*(T/ref)^(rd/(rd-2)) and fp32 positions") \
    X(INT, PGOLF_ROPE_NTK_REF_LEN, rope_ntk_ref_len, "1024", 1, 1048576,                            \
      "the Rotary reference length hard-coded by PR #315 (train_seq_len=1024)")                     \
    X(STR, PGOLF_MLP_ACTIVATION, mlp_activation, "relu2", 0, 0,                                    \
      "MLP activation: relu2 (baseline), leaky_relu2 (PR #1311, PR #1392: leaky_relu(x, slope)^2)") \
    X(FLOAT, PGOLF_LEAKY_RELU_SLOPE, leaky_relu_slope, "0.5", 0, 1, "negative slope of leaky_relu2")  \
    X(STR, PGOLF_INIT_STYLE, init_style, "default", 0, 0,                                           \
      "default (baseline); ortho (PR #65: every non-zero-init Linear orthogonal); ortho_mup (PR #315: " \
      "orthogonal if both dims >= 64, *.proj x 1/sqrt(2*NUM_LAYERS)); banked (PR #1311/#1392: block " \
      "matrices orthogonal, other Linears orthogonal if min(shape) >= 64)")                         \
    X(STR, PGOLF_OPT_PARTITION, opt_partition, "default", 0, 0,                                   \
      "default; banked (PR #1311/#1392: bigram.proj and ve_shared.proj in the scalar AdamW group); " \
      "pr187 (PR #187: the bigram table and its projection trained by Muon)")                      \
    X(BOOL, VE_ENABLED, ve_enabled, "0", 0, 1,                                                     \
      "PR #1311/#1392 value embeddings: scale*proj(embed[idx]) * layer scale added to c_v's output") \
    X(INT, VE_DIM, ve_dim, "128", 1, 65536, "value-embedding width (no projection if = NUM_KV_HEADS*head dim)") \
    X(STR, VE_LAYERS, ve_layers, "9,10", 0, 0, "layers that add the value embedding (comma-separated)") \
    X(INT, PARALLEL_START_LAYER, parallel_start_layer, "-1", -1, 255,                              \
      "PR #1392 parallel residuals from this layer: xi + attn_scale*attn(n) + mlp_scale*mlp(n), "   \
      "n = rmsnorm(xi) (-1: off)")                                                                 \
    X(STR, RECUR_LAYERS, recur_layers, "", 0, 0,                                                   \
      "PR #1392 depth recurrence: these encoder layers run a second pass x + r*(block(x) - x) after " \
      "the skip push (r = recur_scales, 0.5, untrained; decoder layers in the list never recur)")   \
    X(INT, RECUR_START_STEP, recur_start_step, "3000", 0, 1e12,                                    \
      "update index (0-based) from which depth recurrence runs (switched on in the running loop)") \
    X(INT, PGOLF_PRE_ENRICH, pre_enrich, "0", 0, 1048576,                                         \
      "PR #187 GELU pre-enrichment after the embedding (and SmearGate): x = W2 gelu(W1 x), hidden width " \
      "this (PR #187: 768 = 3*MODEL_DIM/2), then the embedding RMSNorm (0: off)")                   \
    X(BOOL, ENCODER_RECURRENCE, encoder_recurrence, "0", 0, 1,                                     \
      "PR #187 encoder recurrence: the encoder blocks run twice, RMSNorm between the passes, the "  \
      "decoder's skips come from the second pass")                                                 \
    X(BOOL, PGOLF_OVERTONE_INIT, overtone_init, "0", 0, 1,                                         \
      "PR #187 overtone init of the tied embedding: singular values of the N(0, std^2) draw replaced " \
      "by S0*(i+1)^-1/2")                                                                          \
    X(STR, PGOLF_PARALLEL_MODE, parallel_mode, "sum", 0, 0,                                        \
      "parallel residual form from PARALLEL_START_LAYER: sum (PR #1392: one stream, shared input); " \
      "lanes1289 (PR #1289: attention and MLP lanes, resid_mix_mlp, route, lane_merge); lanes1334 " \
      "(PR #1334: MLP lane without x0 mix, lane_merge)")                                           \
    /* STE fake quantisation in training forwards (docs/seeds.md) */                              \
    X(STR, PGOLF_QAT_MODE, qat_mode, "off", 0, 0,                                                  \
      "always-on int6 STE QAT of every CastedLinear weight: off; quantile (PR #65: rows of bf16(W), " \
      "clip quantile(|w|, 0.9999984) floored at 1e-8, step clip/31); rowmax (PR #187: step "        \
      "max(rowmax|W|, 1e-12)/31, codes +-31)")                                                     \
    X(BOOL, LATE_QAT, late_qat, "0", 0, 1, "PR #315 late QAT once the lr scale < QAT_THRESHOLD (inert in the record)") \
    X(FLOAT, QAT_THRESHOLD, qat_threshold, "0.1", 0, 1e6, "PR #315 late-QAT lr-scale threshold (with LATE_QAT=1)") \
    X(FLOAT, LATE_QAT_THRESHOLD, late_qat_threshold, "0", 0, 1e6,                                  \
      "PR #1311/#1392 late QAT once the lr scale < this (0: off; inert in the records)")           \
    X(BOOL, PGOLF_LATE_QAT_ACTIVE, late_qat_active, "0", 0, 1,                                     \
      "late QAT really fake-quantises (0: the records' effective behaviour, the switch is logged only)") \
    X(INT, PGOLF_LATE_QAT_CLAMP_LOW, late_qat_clamp_low, "-32", -32, -31,                          \
      "lowest code of the late-QAT grid: -32 (PR #315, #1311) or -31 (PR #1392)")                  \
    /* optimizer */                                                                                \
    X(FLOAT, EMBED_LR, embed_lr, "0.6", 0, 1e6, "token embedding lr when untied")                  \
    X(FLOAT, HEAD_LR, head_lr, "0.008", 0, 1e6, "untied lm_head lr")                               \
    X(FLOAT, TIED_EMBED_LR, tied_embed_lr, "0.05", 0, 1e6, "token embedding lr when tied")         \
    X(FLOAT, TIED_EMBED_INIT_STD, tied_embed_init_std, "0.005", 0, 1e6, "std of the tied embedding init") \
    X(FLOAT, MATRIX_LR, matrix_lr, "0.04", 0, 1e6, "Muon lr of the block matrices")                \
    X(FLOAT, SCALAR_LR, scalar_lr, "0.04", 0, 1e6, "Adam lr of vectors, scalars and control tensors") \
    X(FLOAT, MUON_MOMENTUM, muon_momentum, "0.95", 0, 1, "Muon momentum after warmup")             \
    X(INT, MUON_BACKEND_STEPS, muon_backend_steps, "5", 0, 100, "Newton-Schulz iterations")        \
    X(FLOAT, MUON_MOMENTUM_WARMUP_START, muon_momentum_warmup_start, "0.85", 0, 1,                 \
      "Muon momentum at step 0")                                                                   \
    X(INT, MUON_MOMENTUM_WARMUP_STEPS, muon_momentum_warmup_steps, "500", 0, 1e12,                 \
      "steps of linear momentum warmup")                                                           \
    X(FLOAT, BETA1, beta1, "0.9", 0, 0.999999, "Adam beta1")                                       \
    X(FLOAT, BETA2, beta2, "0.95", 0, 0.999999, "Adam beta2")                                      \
    X(FLOAT, ADAM_EPS, adam_eps, "1e-8", 0, 1, "Adam epsilon")                                     \
    X(FLOAT, GRAD_CLIP_NORM, grad_clip_norm, "0.0", 0, 1e18, "global grad-norm clip (0: off)")     \
    X(BOOL, PGOLF_CLIP_LOCAL, clip_local, "0", 0, 1,                                               \
      "with several ranks clip each rank's own gradient (the mean over its micro-batches) before the " \
      "sum, as PR #1311/#1392 (no DDP); 0: clip the summed gradient (DDP, PR #315/#453)")          \
    X(BOOL, MUON_EQ_R, muon_eq_r, "0", 0, 1, "MuonEq-R: L2-normalise each row of the Nesterov update before NS5") \
    X(FLOAT, MUON_WD, muon_wd, "0", 0, 1e6, "Muon decoupled weight decay: W *= 1 - lr*wd before each update") \
    X(FLOAT, MUON_WEIGHT_DECAY, muon_weight_decay, "0", 0, 1e6, "PR #65's name for MUON_WD")         \
    X(FLOAT, ADAM_WD, adam_wd, "0", 0, 1e6,                                                         \
      "AdamW decoupled weight decay of the token and scalar groups (p *= 1 - lr*wd first)")        \
    X(BOOL, PGOLF_MUON_WD_AFTER, muon_wd_after, "0", 0, 1,                                        \
      "Muon weight decay after the update, p *= 1 - lr*wd (PR #187), instead of before it")         \
    X(INT, LR_WARMUP_STEPS, lr_warmup_steps, "0", 0, 1e12,                                         \
      "PR #1311 linear lr warmup: lr scale times min(step/LR_WARMUP_STEPS, 1) (step 0: lr 0; 0: off)") \
    X(FLOAT, MIN_LR, min_lr, "0.0", 0, 1, "floor of the warmdown lr scale (records after PR #1626)")  \
    /* weight averaging */                                                                         \
    X(BOOL, EMA_ENABLED, ema_enabled, "0", 0, 1, "keep an EMA of the weights and export it")      \
    X(FLOAT, EMA_DECAY, ema_decay, "0.997", 0, 1, "EMA decay per step")                          \
    X(INT, EMA_START_STEP, ema_start_step, "0", 0, 1e12,                                           \
      "0: EMA starts from the initial weights; N: from the weights after step N (PR #1311: 10)")  \
    X(BOOL, SWA_ENABLED, swa_enabled, "0", 0, 1,                                                  \
      "average the weights every SWA_EVERY steps once the lr scale < SWA_START_SCALE (EMA off)")  \
    X(INT, SWA_EVERY, swa_every, "200", 1, 1e12, "SWA sampling period in steps")                 \
    X(FLOAT, SWA_START_SCALE, swa_start_scale, "0.5", 0, 1e6, "SWA samples while lr scale < this (PR #315: 0.5)") \
    X(STR, PGOLF_EXPORT_WEIGHTS, export_weights, "auto", 0, 0,                                     \
      "weights exported at the end: auto (EMA if enabled, else the SWA mean if enabled, else raw); raw; " \
      "ema; swa; best (PR #1311: raw, then EMA, then SWA, each kept if its val_bpb is lower)")       \
    /* export */                                                                                   \
    X(STR, CONTROL_TENSOR_NAME_PATTERNS, control_tensor_name_patterns,                            \
      "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights", 0, 0, \
      "name substrings of control tensors (scalar optimizer group; fp32 at export)")              \
    X(STR, INT8_KEEP_FLOAT_FP32_NAME_PATTERNS, int8_keep_float_fp32_name_patterns, "", 0, 0,      \
      "small tensors kept fp32 at export (default: CONTROL_TENSOR_NAME_PATTERNS)")                 \
    X(STR, QUANT_SCHEME, quant_scheme, "int8_baseline", 0, 0, "export quantisation scheme")        \
    X(STR, EXPORT_CODEC, export_codec, "zlib-9", 0, 0, "artifact compressor: zlib-9, zstd-22, lzma-9, lzma-9e, brotli-11") \
    X(INT, GPTQ_BLOCK_SIZE, gptq_block_size, "128", 1, 1048576, "full GPTQ column block size (PR #1392)") \
    X(INT, GPTQ_CALIB_BATCHES, gptq_calib_batches, "128", 1, 1e9,                                 \
      "full GPTQ calibration: sequences of TRAIN_SEQ_LEN tokens (PR #1392 ran 128)")                \
    X(STR, PGOLF_GPTQ_CALIB, gptq_calib, "train", 0, 0,                                            \
      "full GPTQ calibration text: train (the first tokens of the training shards) or ar (PR "     \
      "#1392: sampled from the model itself, temperature 0.8, seeded with SEED)")                  \
    X(FLOAT, GPTQ_DAMP, gptq_damp, "0.01", 0, 1e6, "full GPTQ damping: H += GPTQ_DAMP*mean(diag H)*I") \
    X(BOOL, PGOLF_INT6_PACK, int6_pack, "0", 0, 1,                                                 \
      "store int6 codes densely, 4 per 3 bytes (the records store one code per byte)")              \
    X(STR, PGOLF_EXPORT_NAMES, export_names, "blocks", 0, 0,                                       \
      "state-dict names written by pgolf export: blocks (blocks.i.attn.c_q.weight, ...); banked "  \
      "(PR #1311/#1392: qo_bank, kv_bank, mlp_up_bank, mlp_down_bank); pr187 (smear_gate.gate)")  \
    /* evaluation */                                                                               \
    X(INT, EVAL_STRIDE, eval_stride, "0", 0, 1048576,                                              \
      "sliding-window eval stride after the roundtrip eval (0: none; records use 64 or 16)")       \
    X(INT, EVAL_SEQ_LEN, eval_seq_len, "0", 0, 1048576, "sliding-window length (0: TRAIN_SEQ_LEN)") \
    X(INT, SW_EVAL_BATCH, sw_eval_batch, "32", 1, 65536, "sliding windows per forward")           \
    X(STR, PGOLF_SW_STYLE, sw_style, "exact", 0, 0,                                                \
      "sliding windows: exact (each target once), pr65 or pr315 (the records' code, spec 3.7/4.9)") \
    X(FLOAT, EVAL_TEMPERATURE, eval_temperature, "1.0", 1e-6, 1e6,                                \
      "sliding-window eval divides the softcapped logits by this (PR #1311: 0.9)")                 \
    /* distributed (torchrun / mpirun) */                                                          \
    X(INT, RANK, rank, "0", 0, 65535, "this process's rank")                                       \
    X(INT, WORLD_SIZE, world_size, "1", 1, 4096, "number of ranks (a divisor or a multiple of 8)")   \
    X(INT, LOCAL_RANK, local_rank, "0", 0, 65535, "rank on this machine (selects the GPU)")        \
    X(BOOL, PGOLF_GRAD_OVERLAP, grad_overlap, "1", 0, 1,                                           \
      "sum each block's gradients across ranks as soon as the backward has finished it (0: all after it)") \
    /* pgolf additions */                                                                          \
    X(STR, PGOLF_BACKEND, backend, "auto", 0, 0, "cpu, cuda, or auto (cuda when a GPU is present)") \
    X(STR, PGOLF_OUT_DIR, out_dir, ".", 0, 0, "where final_model.* are written")                   \
    X(STR, PGOLF_LOG_DIR, log_dir, "logs", 0, 0, "where $RUN_ID.txt is written")                   \
    X(STR, PGOLF_PLOT, plot, "", 0, 0,                                                            \
      "at the end of the run draw its loss curves (pgolf plot) into this PNG (.svg: SVG; empty: none)") \
    X(STR, INIT_FROM, init_from, "", 0, 0, "safetensors file of initial weights (parity tests)")   \
    X(INT, CHECKPOINT_EVERY, checkpoint_every, "0", 0, 1e12,                                       \
      "write a resumable checkpoint every N steps (0: only on SIGINT/SIGTERM)")                    \
    X(STR, CHECKPOINT_PATH, checkpoint_path, "", 0, 0,                                            \
      "checkpoint file (default: $PGOLF_OUT_DIR/$RUN_ID.ckpt)")                                    \
    X(STR, RESUME, resume, "", 0, 0, "continue the run saved in this checkpoint file")            \
    X(BOOL, PGOLF_NON_RECORD, non_record, "0", 0, 1, "allow an artifact above 16,000,000 bytes")   \
    X(BOOL, PGOLF_BF16_ROPE_TABLE, bf16_rope_table, "1", 0, 1,                                     \
      "replicate the baseline's bf16 RoPE positions/inv_freq/cos/sin (spec 7.1)")

typedef enum { CFG_STR, CFG_INT, CFG_FLOAT, CFG_BOOL } pg_cfg_type;

typedef struct {
#define PG_CFG_FIELD_STR(f) char *f;
#define PG_CFG_FIELD_INT(f) int64_t f;
#define PG_CFG_FIELD_FLOAT(f) double f;
#define PG_CFG_FIELD_BOOL(f) int f;
#define X(type, key, field, def, lo, hi, help) PG_CFG_FIELD_##type(field)
    PG_CONFIG_KEYS(X)
#undef X
    /* which keys were set explicitly, and where (for the resolved-config dump) */
    char set_from[128][16];
} pg_config;

/* Defaults only. */
void config_defaults(pg_config *c);
/* Apply one KEY=VALUE; returns 0 or -1 with err ("KEY: not a number: 'x'", "KEY: 3 out of range
 * [1, 2]", "unknown key KEY"). `source` is recorded for the dump ("env", "preset"). */
int config_set(pg_config *c, const char *key, const char *value, const char *source, char *err, size_t errlen);
/* Read a preset file of KEY=VALUE lines (# comments, blank lines). Unknown keys are errors. */
int config_load_preset(pg_config *c, const char *path, char *err, size_t errlen);
/* Apply every known key present in the environment; also rejects environment variables of the
 * records that this build does not implement (a silent ignore would train a different model). */
int config_load_env(pg_config *c, char *err, size_t errlen);
/* Cross-key validation (divisibility, shapes, world size, ...). */
int config_validate(const pg_config *c, char *err, size_t errlen);
/* Defaults + optional preset + environment + validation; dies with one error line on failure. */
void config_resolve(pg_config *c, const char *preset_path);
void config_free(pg_config *c);
/* The resolved configuration as one JSON object {KEY: value, ...} (malloc'd). */
char *config_to_json(const pg_config *c);
/* Apply a JSON object of KEY: value (from an artifact); unknown keys are errors. */
int config_from_json(pg_config *c, const char *json, char *err, size_t errlen);
/* Print `KEY=value  # help` lines (--help) or the resolved values. */
void config_print_help(void);
void config_dump(const pg_config *c, void (*emit)(const char *line, void *ctx), void *ctx);
/* Micro-batches per rank and optimizer step: 8 / WORLD_SIZE as train_gpt.py (1 beyond 8 ranks). */
int config_grad_accum(const pg_config *c);
/* The training time cap in seconds: MAX_WALLCLOCK_SECONDS less GPTQ_RESERVE_SECONDS (<= 0: no cap). */
double config_train_cap_seconds(const pg_config *c);
/* MLP hidden width int(MLP_MULT * MODEL_DIM) as Python computes it. */
int config_mlp_hidden(const pg_config *c);
/* SmearGate variant of PGOLF_SMEAR_MODE/USE_SMEARGATE: 0 off, 1 pre (PR #65), 2 post (PR #315); -1 invalid. */
int config_smear_mode(const pg_config *c);
/* lr-scale threshold of late QAT: LATE_QAT_THRESHOLD (PR #1311/#1392) if > 0, else QAT_THRESHOLD
 * when LATE_QAT=1 (PR #315), else 0 (off). */
double config_late_qat_threshold(const pg_config *c);
/* Comma-separated layer indices (VE_LAYERS, RECUR_LAYERS) into out[max]; returns the count, or -1
 * if an entry is not an integer in [0, NUM_LAYERS) or there are more than max. */
int config_layer_list(const pg_config *c, const char *s, int *out, int max);

#endif
