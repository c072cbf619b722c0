/* quant.h: post-training quantisation of a state dict as the records export it, its exact inverse
 * (dequantisation) and the byte layout of the quantised object inside a pgolf artifact.
 *
 * Schemes (QUANT_SCHEME; spec baseline-pr65-pr453.md §2.9, §3.6, §4.7, §7.5):
 *   int8_baseline (alias baseline)   train_gpt.py: tensors of <= 65,536 elements kept (fp32 when the
 *       name matches INT8_KEEP_FLOAT_FP32_NAME_PATTERNS, else fp16 for fp32/bf16 tensors, as is
 *       otherwise); larger 2-D tensors int8 per row with the 99.99984 % quantile clip
 *       (torch.quantile semantics), scale max(clip/127, 1/127) used in fp32 to quantise and stored
 *       as fp16; other large tensors int8 with one fp32 scale clip/127 (1 if clip is 0).
 *   int6_pr65 (alias pr65)   PR #65: small tensors as the baseline; names containing tok_emb or
 *       bigram_hash kept fp16; other 2-D tensors int6 per row (same quantile clip, floor 1/31,
 *       codes in [-31, 31], one per byte); other large tensors int8 per tensor.
 *   int6_pr315 (alias pr315)   PR #315: every tensor of <= 65,536 elements kept fp16;
 *       large control tensors fp32; `.attn.`/`.mlp.` matrices int6 per row with the row max (no
 *       clip), scale fp16(max(rmax/31, 1/31)) used to quantise, codes in [-32, 31]; the rest int8
 *       per row as the baseline.
 *   int6_pr453 (alias pr453)   PR #453's main candidate (baseline spec §5): int6_pr315's quantisation
 *       with the candidate's log labels (mixed+zstd, final_quant_*).
 *   int6_gptq_lite (alias pr1311)   PR #1311 (spec pr1311-pr1392-pr187.md §2.8): every float tensor of
 *       <= 65,536 elements kept fp16 (before the control-name check); large control tensors fp32;
 *       `.attn.`/`.proj.`/`.mlp.` matrices int6 by the GPTQ-lite clip search (quant_int6_search: one
 *       percentile p of {0.999, 0.9995, 0.9999, 0.99999, 1} per matrix, the lowest whole-matrix MSE;
 *       s = fp16(max(quantile(|w_r|, p)/31, 1/31)), codes clamp(round(w/s), -31, 31)); non-2-D ones per
 *       tensor (s = fp16(amax/31 or 1), codes +-31); the rest int8 per row as the baseline.
 *   int6_gptq (alias pr1392)   PR #1392 (§3.8): routing as int6_gptq_lite; matrices with a Hessian
 *       (quant_opts.hessians, collected by gptq.c) full GPTQ (gptq_quantize), the others (and a
 *       Hessian whose Cholesky fails) GPTQ-lite, as the record's code does without a Hessian.
 *   int6_pr187 (alias pr187)   PR #187 (§4.9): tensors of <= 65,536 elements and tok_emb.weight kept
 *       as the baseline keeps small tensors (fp32 for INT8_KEEP_FLOAT_FP32_NAME_PATTERNS, else fp16);
 *       every other float tensor int6 with the baseline's quantile clip (per row for 2-D, scale
 *       max(clip/31, 1/31) in fp32, stored fp16; per tensor otherwise, fp32 scale clip/31 or 1),
 *       codes in [-31, 31].
 * All arithmetic is fp32 with round-half-to-even; dequantisation is q * fp32(stored scale), cast
 * to the tensor's original dtype (bf16 tables are rounded to bf16). Non-finite weights are
 * refused. */
#ifndef PGOLF_QUANT_H
#define PGOLF_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "statedict.h"

#define QUANT_KEEP_MAX_NUMEL 65536
#define QUANT_CLIP_Q 0.9999984 /* INT8_CLIP_PERCENTILE / 100 */

typedef enum {
    QS_INT8_BASELINE = 0,
    QS_INT6_PR65,
    QS_INT6_PR315,
    QS_INT6_GPTQ_LITE,
    QS_INT6_GPTQ,
    QS_INT6_PR187,
    QS_INT6_PR453, /* PR #453's main candidate: PR #315's quantisation, its own log labels */
    QS_COUNT
} quant_scheme;

/* the clip percentiles of GPTQ-lite and full GPTQ (PR #1311, #1392) */
#define QUANT_N_PCT 5
extern const double QUANT_PCT[QUANT_N_PCT];

typedef enum {
    QT_PASS = 0,   /* stored in dtype `stored` (a cast of the original, or the original itself) */
    QT_ROW = 1,    /* int8 codes, one scale per row (first dimension), scale dtype F16 */
    QT_TENSOR = 2, /* int8 codes, one scale for the whole tensor, scale dtype F32 or F16 */
} qt_kind;

typedef struct {
    char *name;
    qt_kind kind;
    pg_dtype orig;   /* the state-dict dtype restored by dequantisation */
    pg_dtype stored; /* QT_PASS: dtype of data; quantised kinds: DT_I8 */
    int bits;        /* quantised kinds: 8 or 6 (codes fit in [-2^(bits-1), 2^(bits-1)-1]); 0 for pass */
    int ndim;
    int64_t shape[SD_MAX_NDIM];
    void *data; /* owned: codes or passthrough values */
    size_t nbytes;
    pg_dtype scale_dtype; /* quantised kinds */
    void *scale;          /* owned, n_scale values of scale_dtype */
    size_t n_scale;
} qtensor;

typedef struct {
    qtensor *t;
    int n, cap;
    int pack6; /* serialized form version 2: int6 codes packed 4 per 3 bytes (PGOLF_INT6_PACK=1);
                * set by the caller before qstate_serialize, and by qstate_parse from the payload */
} qstate;

/* The calibration Hessians of full GPTQ (int6_gptq), collected by gptq.c (gptq.h). */
typedef struct gptq_hessians {
    int L, d, hd, hidden;
    int n_seqs, T;                  /* calibration: sequences and their length */
    float *qkv, *proj, *fc, *mproj; /* host fp32, per layer: d*d, hd*hd, d*d, hidden*hidden */
} gptq_hessians;

/* The Hessian of a block matrix by state-dict name (blocks.L.attn.c_q.weight, ...), NULL if none;
 * *dim receives its size. */
const float *gptq_hessian(const gptq_hessians *h, const char *name, int *dim);
void gptq_hessians_free(gptq_hessians *h);
/* GPTQ of w (rows x cols, fp32) with H (cols x cols): codes q (rows x cols) and fp16 row scales s16;
 * *p_index (optional) the chosen percentile. damp: GPTQ_DAMP; block: GPTQ_BLOCK_SIZE (<= 0: 128).
 * 0, or -1 when the Cholesky factorisation fails (H not positive definite: the record then falls
 * back to the clip search, quant_int6_search). */
int gptq_quantize(const float *w, int rows, int cols, const float *H, double damp, int block, int8_t *q, uint16_t *s16,
                  int *p_index);


typedef struct {
    const char *control_patterns;    /* CONTROL_TENSOR_NAME_PATTERNS */
    const char *keep_fp32_patterns;  /* INT8_KEEP_FLOAT_FP32_NAME_PATTERNS (NULL or "": control) */
    const char *fp16_keep_patterns;  /* int6_pr65's large fp16 passthrough (NULL: "tok_emb,bigram_hash") */
    /* int6_gptq: Hessians of the block matrices (NULL: GPTQ-lite for every matrix), the damping
     * GPTQ_DAMP and the column block GPTQ_BLOCK_SIZE (gptq_block <= 0: the record's 0.01 and 128) */
    const struct gptq_hessians *hessians;
    double gptq_damp;
    int gptq_block;
} quant_opts;

/* the record's `stats`: sums over the input state dict and the quantised object */
typedef struct {
    size_t param_count, num_tensors, num_float_tensors, num_nonfloat_tensors;
    size_t baseline_tensor_bytes; /* raw state-dict tensor bytes */
    size_t payload_bytes;         /* codes + scales + passthrough bytes (the record's int8_payload_bytes) */
    size_t n_gptq, n_gptq_lite;   /* int6_gptq / int6_gptq_lite: matrices by full GPTQ / by the clip search
                                   * (PR #1392's "gptq_quantize: N GPTQ layers, M naive layers") */
} quant_stats;

/* "int8_baseline", "baseline", "int6_pr65", "pr65", "int6_pr315", "pr315", "pr453", "int6_gptq_lite",
 * "pr1311", "int6_gptq", "pr1392", "int6_pr187", "pr187" -> scheme. */
int quant_scheme_parse(const char *s, quant_scheme *out, char *err, size_t errlen);
const char *quant_scheme_name(quant_scheme s);
/* The records' log labels for a scheme and codec: `Serialized model <log>: ...` and
 * `final_<short>_roundtrip`. With the record's own codec these are the record's strings
 * ("int8+zlib"/"int8_zlib", "int6+zstd-22"/"int6", "int6+zstd"/"int6"); with another codec the
 * codec label is used ("int8+lzma-9e"/"int8_lzma"). */
void quant_labels(quant_scheme s, const char *codec_label, char *log_label, size_t nl, char *short_label, size_t ns);
/* The scheme's record codec label ("zlib-9", "zstd-22", "lzma-9e", "brotli-11", "lzma-6"). */
const char *quant_scheme_default_codec(quant_scheme s);

/* torch.quantile(v, q) with linear interpolation (fp32 rank q*(n-1), FMA lerp) over n >= 1 values;
 * v is reordered. */
float quant_quantile(float *v, size_t n, double q);

/* PR #1311 GPTQ-lite of a (rows, cols) fp32 matrix: for each p of QUANT_PCT the row scales
 * quant_pct_scales and codes clamp(round(w/s), -31, 31); keeps the p with the lowest mean squared
 * error over the whole matrix (first on ties, summed in double). Writes codes and fp16 scales;
 * returns the index of the chosen p. */
int quant_int6_search(const float *w, size_t rows, size_t cols, int8_t *q, uint16_t *s16);
/* s16[r] = fp16(max(c_r/31, 1/31)), c_r = torch.quantile(|w_r|, p) (the row max for p >= 1) */
void quant_pct_scales(const float *w, size_t rows, size_t cols, double p, uint16_t *s16);

/* Quantise a state dict. 0, or -1 with err (a non-finite weight, an unsupported layout). */
int quantize_statedict(const statedict *sd, quant_scheme scheme, const quant_opts *o, qstate *out, quant_stats *st,
                       char *err, size_t errlen);
/* Dequantise into a state dict in the original dtypes. 0 or -1 with err. */
int dequantize_qstate(const qstate *q, statedict *out, char *err, size_t errlen);
size_t quant_payload_bytes(const qstate *q);

void qstate_init(qstate *q);
void qstate_free(qstate *q);

/* The quantised object's serialized form (the uncompressed model payload of an artifact):
 *   "PGQ1", u32 tensor count, then per tensor: u16 name length, name, u8 kind, u8 orig dtype,
 *   u8 stored dtype, u8 bits, u8 scale dtype, u8 ndim, u64 shape[ndim], u64 n_scale;
 *   then the codes of every quantised tensor, the scales of every quantised tensor, and the data of
 *   every passthrough tensor, each group in table order (the order torch.save writes the records'
 *   `quantized`, `scales`, `passthrough` dicts). All little-endian.
 * Version 2, written when q->pack6 is set (PGOLF_INT6_PACK=1): "PGQ2", u32 tensor count, u32 flags
 * (bit 0: int6 codes packed; no other bit may be set), the same table, then the same three groups
 * except that the codes of every tensor with 6 bits are packed: each group of 4 codes c0..c3 is the
 * 24-bit little-endian value sum (c_i & 63) << 6i (6-bit two's complement fields) in 3 bytes; a last
 * group of r < 4 codes takes ceil(6r/8) bytes and its unused high bits must be 0. int8 codes,
 * scales and passthrough data are as in version 1. The reader accepts both versions; in memory the
 * codes are always one int8 per element. */
/* bytes of n packed int6 codes: 3 per 4 codes, ceil(6r/8) for a last group of r */
size_t quant_packed6_len(size_t n);
/* pack n codes in [-32, 31] */
void quant_pack6(const int8_t *c, size_t n, uint8_t *out);
/* unpack n codes; -1 if a padding bit of the last group is set */
int quant_unpack6(const uint8_t *in, size_t n, int8_t *c);
void qstate_serialize(const qstate *q, uint8_t **buf, size_t *len);
/* Parse and validate a serialized object (what names it in messages). 0 or -1 with err. */
int qstate_parse(const uint8_t *buf, size_t len, const char *what, qstate *q, char *err, size_t errlen);

#endif
