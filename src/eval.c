/* eval.c: validation and val_bpb accounting (see eval.h). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "spm.h"

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
    eval_finish(r);
}
