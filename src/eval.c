/* eval.c: validation and val_bpb accounting (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "dist.h"
#include "spm.h"

/* the three sums every rank adds into the others' (dist_sum_f64 over &loss_sum, 3) */
_Static_assert(offsetof(eval_result, token_count) == offsetof(eval_result, loss_sum) + sizeof(double) &&
                   offsetof(eval_result, byte_count) == offsetof(eval_result, loss_sum) + 2 * sizeof(double),
               "eval_result sums must be contiguous");

int bpb_luts_load(bpb_luts *L, const char *tokenizer_path, int vocab_size, char *err, size_t errlen) {
    memset(L, 0, sizeof(*L));
    spm_model *sp = spm_load(tokenizer_path, err, errlen);
    if (!sp) return -1;
    int sv = spm_vocab_size(sp);
    if (sv != vocab_size) {
        spm_free(sp);
        return pg_err(err, errlen, "%s: tokenizer vocab_size=%d does not match VOCAB_SIZE=%d", tokenizer_path, sv,
                      vocab_size);
    }
    L->size = sv > vocab_size ? sv : vocab_size;
    L->base_bytes = xcalloc((size_t)L->size, sizeof(int16_t));
    L->has_leading_space = xcalloc((size_t)L->size, 1);
    L->is_boundary = xcalloc((size_t)L->size, 1);
    spm_byte_luts(sp, L->size, L->base_bytes, L->has_leading_space, L->is_boundary);
    spm_free(sp);
    return 0;
}

void bpb_luts_free(bpb_luts *L) {
    free(L->base_bytes);
    free(L->has_leading_space);
    free(L->is_boundary);
    memset(L, 0, sizeof(*L));
}

void eval_finish(eval_result *r) {
    r->val_loss = r->loss_sum / r->token_count;
    double bits_per_token = r->val_loss / log(2.0);
    double tokens_per_byte = r->token_count / r->byte_count;
    r->val_bpb = bits_per_token * tokens_per_byte;
}

/* every rank's sums added into all (loss_sum, token_count, byte_count), then the metrics */
static void finish_across_ranks(eval_result *r, int world) {
    if (world > 1) dist_sum_f64(&r->loss_sum, 3);
    eval_finish(r);
}

static long b1_min(long a, long b) { return a < b ? a : b; }

void eval_val(gpt_model *m, const uint16_t *val, size_t usable, int seq_len, int local_batch_seqs, int rank,
              int world, const bpb_luts *L, eval_result *r, float *nll_out) {
    memset(r, 0, sizeof(*r));
    const long total_seqs = (long)(usable / (size_t)seq_len);
    const long s0 = total_seqs * rank / world, s1 = total_seqs * (rank + 1) / world;
    const int bs = local_batch_seqs < m->B ? local_batch_seqs : m->B;
    int32_t *x = xmalloc((size_t)bs * seq_len * sizeof(int32_t)), *y = xmalloc((size_t)bs * seq_len * sizeof(int32_t));
    float *nll = xmalloc((size_t)bs * seq_len * sizeof(float));
    for (long b0 = s0; b0 < s1; b0 += bs) {
        long b1 = b0 + bs < s1 ? b0 + bs : s1;
        int nseq = (int)(b1 - b0);
        size_t base = (size_t)b0 * seq_len, n = (size_t)nseq * seq_len;
        for (size_t i = 0; i < n; i++) {
            x[i] = val[base + i];
            y[i] = val[base + i + 1];
        }
        gpt_forward_backward(m, x, y, nseq, 0.0f, nll);
        for (size_t i = 0; i < n; i++) {
            r->loss_sum += nll[i];
            r->byte_count += bpb_token_bytes(L, y[i], x[i]);
        }
        r->token_count += (double)n;
        if (nll_out) memcpy(nll_out + base, nll, n * sizeof(float));
    }
    free(x);
    free(y);
    free(nll);
    finish_across_ranks(r, world);
}

int sw_style_parse(const char *s) {
    if (!strcmp(s, "exact")) return SW_EXACT;
    if (!strcmp(s, "pr65")) return SW_PR65;
    if (!strcmp(s, "pr315")) return SW_PR315;
    return -1;
}

long sw_num_windows(sw_style st, size_t usable, int S, int stride) {
    size_t N = usable;
    switch (st) {
    case SW_PR65: return N < (size_t)S ? 0 : (long)((N - (size_t)S) / (size_t)stride + 1);
    case SW_PR315: return (long)((N + (size_t)stride - 1) / (size_t)stride);
    default:
        /* window w > 0 scores [w*stride + S - stride, ...): windows while that start is below N */
        if (N <= (size_t)S) return 1;
        return 1 + (long)((N - (size_t)S + (size_t)stride - 1) / (size_t)stride);
    }
}

void sw_window(sw_style st, size_t usable, int S, int stride, long w, size_t *ws, int *wlen, size_t *j0, size_t *j1) {
    size_t N = usable, start = (size_t)w * (size_t)stride;
    size_t len = N - start < (size_t)S ? N - start : (size_t)S;
    *ws = start;
    *wlen = (int)len;
    switch (st) {
    case SW_PR65:
        *j0 = start + (size_t)(S - stride);
        *j1 = start + (size_t)S;
        break;
    case SW_PR315:
        *j0 = w == 0 ? start : start + (len > (size_t)stride ? len - (size_t)stride : 0);
        *j1 = start + len;
        break;
    default:
        *j0 = w == 0 ? start : start + (size_t)(S - stride);
        *j1 = start + len;
        break;
    }
}

/* nll of target y under softmax(l/temp), from the row of softcapped logits l the forward leaves
 * behind (softcap_ce with grad_scale 0 stores them in m->logits); double-precision logsumexp */
static float nll_tempered(const float *l, int V, int y, double temp) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = l[v] > mx ? l[v] : mx;
    double sum = 0, inv = 1.0 / temp;
    for (int v = 0; v < V; v++) sum += exp(((double)l[v] - mx) * inv);
    return (float)(log(sum) - ((double)l[y] - mx) * inv);
}

void eval_sliding(gpt_model *m, const uint16_t *val, size_t usable, int stride, int batch, sw_style st, double temp,
                  int rank, int world, const bpb_luts *L, eval_result *r) {
    memset(r, 0, sizeof(*r));
    const int S = m->T;
    const long W = sw_num_windows(st, usable, S, stride);
    const long w0 = W * rank / world, w1 = W * (rank + 1) / world;
    const int bs = batch < m->B ? batch : m->B;
    int32_t *x = xmalloc((size_t)bs * S * sizeof(int32_t)), *y = xmalloc((size_t)bs * S * sizeof(int32_t));
    float *nll = xmalloc((size_t)bs * S * sizeof(float));
    float *lrow = temp != 1.0 ? xmalloc((size_t)S * m->V * sizeof(float)) : NULL;
    for (long b0 = w0; b0 < w1; b0 += bs) {
        int nb = (int)(b1_min(b0 + bs, w1) - b0);
        for (int b = 0; b < nb; b++) {
            size_t ws, j0, j1;
            int wlen;
            sw_window(st, usable, S, stride, b0 + b, &ws, &wlen, &j0, &j1);
            for (int i = 0; i < S; i++) {
                x[(size_t)b * S + i] = i < wlen ? val[ws + i] : 0;
                y[(size_t)b * S + i] = i < wlen ? val[ws + i + 1] : 0;
            }
        }
        gpt_forward_backward(m, x, y, nb, 0.0f, nll);
        for (int b = 0; b < nb; b++) {
            size_t ws, j0, j1;
            int wlen;
            sw_window(st, usable, S, stride, b0 + b, &ws, &wlen, &j0, &j1);
            if (lrow && j1 > j0) /* the window's scored rows of softcapped logits, in one copy (one sync on a GPU) */
                m->ops->act_to_f32(lrow, (const pg_act *)((const char *)m->logits +
                                                          ((size_t)b * S + (j0 - ws)) * (size_t)m->V * m->ops->act_bytes),
                                   (j1 - j0) * (size_t)m->V);
            for (size_t j = j0; j < j1; j++) {
                size_t i = (size_t)b * S + (j - ws);
                if (lrow) /* EVAL_TEMPERATURE: CE of the softcapped logits divided by temp (PR #1311) */
                    nll[i] = nll_tempered(lrow + (j - j0) * (size_t)m->V, m->V, y[i], temp);
                r->loss_sum += nll[i];
                r->byte_count += bpb_token_bytes(L, y[i], x[i]);
                r->token_count += 1;
            }
        }
    }
    free(x);
    free(y);
    free(nll);
    free(lrow);
    finish_across_ranks(r, world);
}
