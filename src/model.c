/* model.c: the baseline GPT of train_gpt.py: parameter table, initialisation, forward and
 * hand-written backward (spec §2.2-§2.4), written top to bottom as op calls (ops.h).
 *
 * Forward (N = B*T tokens):
 *   e = tok_emb[idx] (+ bigram(idx): PR #65 proj(table[hash]), PR #315 scale*proj(embed[hash]))
 *   x0 = rmsnorm(e); with SmearGate: x0 = rmsnorm(smear(e)) (PR #65) or smear(rmsnorm(e)) (PR #315)
 *   x = x0
 *   encoder blocks 0..n_enc-1: x = block(x, x0), outputs kept for the U-Net skips
 *   decoder block j: x = x + skip_weights[j] * enc_out[n_enc-1-j] (j < n_skip); x = block(x, x0)
 *   logits = softcap(rmsnorm(x) @ head^T); loss = mean CE
 * block l (x, x0), s = 1/sqrt(l+1) with LN_SCALE else 1:
 *   xm = m0*x + m1*x0; n1 = rmsnorm(xm)
 *   q,k,v = s*n1 Wq^T, s*n1 Wk^T, s*n1 Wv^T; q,k = rope(rmsnorm_head(.)) (first rope_dims dims), q *= q_gain
 *   y = attn(q,k,v); in the last XSA_LAST_N layers y -= (y.v^)v^ per head (v^ = v/|v| of its KV head)
 *   xa = xm + attn_scale * (y Wo^T)
 *   xout = xa + mlp_scale * (act(s*rmsnorm(xa) Wfc^T) Wp^T), act = relu^2 or leaky_relu(., slope)^2
 * PR #1311/#1392: v += ve_layer_scale_k * ve in VE layers (ve = scale*proj(ve_embed[idx]), before
 * XSA); parallel layers (>= PARALLEL_START_LAYER): xout = xa + mlp_scale*mlp(n1), both branches
 * reading n1 = rmsnorm(xm); a recurring encoder layer (RECUR_LAYERS, while recur_on) runs a second
 * pass on its output after the skip push: x = x1 + r*(block(x1) - x1), r = recur_scales.k.
 * STE QAT (PGOLF_QAT_MODE, late QAT): in a training forward every CastedLinear weight W (`linear`
 * in the table) is read from its fake-quantised copy wq = grid(W) (ops fake_quant_rows), forward
 * and input gradients alike; W's gradient is that of wq, the straight-through estimator.
 * PR #187 (second spec §4.3-§4.5): e (+ bigram) -> smear -> [W2 gelu(W1 .)] (PGOLF_PRE_ENRICH) ->
 * rmsnorm = x0; ENCODER_RECURRENCE: the encoder blocks run on x0, the result is rmsnorm'd and the
 * encoder runs again on it (x0 unchanged), the skips taken from that second pass; overtone init of
 * the tied table (PGOLF_OVERTONE_INIT). Two-lane parallel residuals (PGOLF_PARALLEL_MODE, §3.4) in
 * the decoder layers from PARALLEL_START_LAYER: an attention lane and an MLP lane, both starting
 * from the single stream at the first lane block, blended at the end as m*xa + (1-m)*xb (lane_merge);
 * lanes1289 adds the skips to both lanes, lanes1334 drops the skips after its first lane block (its
 * code adds them to a stream no longer read).
 */
#include "model.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---- random numbers for initialisation (xoshiro256**; not PyTorch's stream) ---- */
typedef struct {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}
static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
static uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return res;
}
static double rng_uniform(rng_t *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_normal(rng_t *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* An orthogonal (rows, cols) matrix times gain, as torch.nn.init.orthogonal_ draws it: the QR
 * factorisation of a Gaussian (max, min) matrix with the signs fixed so that diag(R) > 0,
 * transposed when rows < cols (orthonormal rows if rows <= cols, else orthonormal columns).
 * Gram-Schmidt, run twice per column, yields exactly that Q (its R has a positive diagonal). */
static void orthogonal_fill(float *w, int rows, int cols, double gain, rng_t *r) {
    const int n = rows >= cols ? rows : cols, k = rows >= cols ? cols : rows;
    double *q = xmalloc((size_t)n * k * sizeof(double)); /* (k, n): row j is column j of Q */
    double *c = xmalloc((size_t)k * sizeof(double));
    for (size_t i = 0; i < (size_t)n * k; i++) q[i] = rng_normal(r);
    for (int j = 0; j < k; j++) {
        double *v = q + (size_t)j * n;
        for (int pass = 0; pass < 2 && j > 0; pass++) { /* v -= Q_<j^T (Q_<j v) */
            cblas_dgemv(CblasRowMajor, CblasNoTrans, j, n, 1.0, q, n, v, 1, 0.0, c, 1);
            cblas_dgemv(CblasRowMajor, CblasTrans, j, n, -1.0, q, n, c, 1, 1.0, v, 1);
        }
        double nrm = cblas_dnrm2(n, v, 1);
        for (int i = 0; i < n; i++) v[i] /= nrm;
    }
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            w[(size_t)i * cols + j] = (float)(gain * (rows >= cols ? q[(size_t)j * n + i] : q[(size_t)i * n + j]));
    free(q);
    free(c);
}

/* LAPACK (OpenBLAS ships it): thin SVD of a column-major (m, n) matrix */
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork,
                    int *info, size_t jobu_len, size_t jobvt_len);

/* PR #187's overtone init (spec §4.5): W ~ N(0, std^2) (rows, cols), thin SVD W = U diag(S) V^T with S
 * descending, W <- U diag(S_0*(i+1)^-1/2) V^T: the draw's singular vectors kept, the spectrum a 1/sqrt(k)
 * power law anchored at its largest value. In double (the record: fp32). */
static void overtone_fill(float *w, int rows, int cols, double std, rng_t *r) {
    /* row-major W is the column-major (cols, rows) matrix A = W^T: A = Ua S Vta, W = Vta^T S Ua^T */
    const int M = cols, N = rows, k = M < N ? M : N;
    double *a = xmalloc((size_t)M * N * sizeof(double)), *s = xmalloc((size_t)k * sizeof(double));
    double *u = xmalloc((size_t)M * k * sizeof(double)), *vt = xmalloc((size_t)k * N * sizeof(double));
    for (size_t i = 0; i < (size_t)M * N; i++) a[i] = rng_normal(r) * std;
    int lwork = -1, info = 0;
    double wq = 0;
    dgesvd_("S", "S", &M, &N, a, &M, s, u, &M, vt, &k, &wq, &lwork, &info, 1, 1);
    PG_CHECK(info == 0);
    lwork = (int)wq;
    double *work = xmalloc((size_t)(lwork > 1 ? lwork : 1) * sizeof(double));
    dgesvd_("S", "S", &M, &N, a, &M, s, u, &M, vt, &k, work, &lwork, &info, 1, 1);
    if (info != 0) pg_die("overtone init: the SVD of a %dx%d draw did not converge (LAPACK info %d)", rows, cols, info);
    for (int t = 0; t < k; t++) { /* Ua[:, t] *= S_0*(t+1)^-1/2 */
        const double st = s[0] / sqrt((double)t + 1.0);
        for (int i = 0; i < M; i++) u[(size_t)t * M + i] *= st;
    }
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, M, N, k, 1.0, u, M, vt, k, 0.0, a, M);
    for (size_t i = 0; i < (size_t)M * N; i++) w[i] = (float)a[i]; /* column-major A = row-major W */
    free(work);
    free(a);
    free(s);
    free(u);
    free(vt);
}

int name_matches_patterns(const char *name, const char *patterns) {
    const char *p = patterns;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 0) {
            char pat[128];
            if (n >= sizeof(pat)) n = sizeof(pat) - 1;
            memcpy(pat, p, n);
            pat[n] = 0;
            if (strstr(name, pat)) return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* ---- parameter table ---- */
static int add_param(gpt_model *m, int cap, const char *name, int ndim, int64_t r, int64_t c, param_group grp,
                     param_init init, float a, pg_dtype sd_dtype) {
    PG_CHECK(m->n_params < cap);
    param_info *p = &m->params[m->n_params];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->ndim = ndim;
    p->shape[0] = r;
    p->shape[1] = c;
    p->numel = (size_t)r * (ndim == 2 ? (size_t)c : 1);
    /* offsets are padded to 128 floats so every tensor (and its bf16 compute copy) starts 256-byte
     * aligned, as cuBLASLt's fast kernels want */
    m->n_floats = (m->n_floats + 127) & ~(size_t)127;
    p->offset = m->n_floats;
    p->group = grp;
    p->init = init;
    p->init_a = a;
    p->sd_dtype = sd_dtype;
    p->layer = -1;
    m->n_floats += p->numel;
    m->n_count += p->numel;
    return m->n_params++;
}

/* Init of a Linear weight (rows, cols) that the record does not zero-initialise, under
 * PGOLF_INIT_STYLE (spec §3.3, §4.2); `ctor` is what the module's constructor leaves. */
static void linear_init(const pg_config *cfg, const gpt_model *m, const char *name, int64_t r, int64_t c,
                        param_init ctor, float ctor_a, param_init *init, float *a) {
    *init = ctor;
    *a = ctor_a;
    if (!strcmp(cfg->init_style, "ortho")) { /* PR #65: every Linear without _zero_init */
        *init = INIT_ORTHO;
        *a = 1.0f;
    } else if (!strcmp(cfg->init_style, "ortho_mup") && r >= 64 && c >= 64) { /* PR #315 */
        *init = INIT_ORTHO;
        size_t n = strlen(name);
        int is_proj = strstr(name, ".proj.") || (n >= 5 && !strcmp(name + n - 5, ".proj"));
        *a = is_proj ? (float)(1.0 / sqrt(2.0 * m->L)) : 1.0f;
    } else if (!strcmp(cfg->init_style, "banked") && (!strncmp(name, "blocks.", 7) || (r >= 64 && c >= 64))) {
        /* PR #1311/#1392: the bank matrices orthogonal, other Linears if min(shape) >= 64 (the muP
         * factor of the output projections multiplies zeros) */
        *init = INIT_ORTHO;
        *a = 1.0f;
    }
}

static void build_table(gpt_model *m, const pg_config *cfg) {
    int cap = 40 + 12 * m->L;
    const param_group side_grp = !strcmp(cfg->opt_partition, "banked") ? GROUP_SCALAR : GROUP_MUON;
    m->params = xcalloc((size_t)cap, sizeof(param_info));
    const char *ctrl = cfg->control_tensor_name_patterns;
    const int d = m->d, hd = m->H * m->D, kvd = m->Hk * m->D;
    char nm[96];
    param_init in;
    float ia;
    m->i_bg_proj = m->i_ve_proj = -1;
    /* PyTorch state-dict order: a module's own parameters, then its children in registration order */
    for (int k = 0; k < m->recur_n; k++) { /* PR #1392: fixed at 0.5, in no optimizer group */
        snprintf(nm, sizeof(nm), "recur_scales.%d", k);
        add_param(m, cap, nm, 1, d, 1, GROUP_NONE, INIT_CONST, 0.5f, DT_F32);
    }
    int i_skip = m->n_skip > 0 ? add_param(m, cap, "skip_weights", 2, m->n_skip, d, GROUP_SCALAR, INIT_ONES, 0, DT_F32) : -1;
    (void)i_skip;
    if (m->lanes) /* PR #1289 / PR #1334: the lanes' blend, a scalar of the scalar AdamW group */
        add_param(m, cap, "lane_merge", 0, 1, 1, GROUP_SCALAR, INIT_CONST, 0.5f, DT_F32);
    const int pr187 = !strcmp(cfg->opt_partition, "pr187");
    float emb_std = m->tied ? (float)cfg->tied_embed_init_std : 1.0f; /* untied: nn.Embedding's N(0,1) */
    m->i_tok_emb = add_param(m, cap, "tok_emb.weight", 2, m->V, d, GROUP_TOKEN, m->overtone ? INIT_OVERTONE : INIT_NORMAL,
                             emb_std, DT_BF16);
    if (m->bigram == 1) { /* PR #65 BigramHash: table N(0, 0.01^2) (bf16 param), zero-init proj (Muon).
                             PR #187 (PGOLF_OPT_PARTITION=pr187): the table trained by Muon too, the
                             proj left at nn.Linear's U(+-1/sqrt(in)) (spec §4.3) */
        add_param(m, cap, "bigram_hash.table.weight", 2, m->nb, m->db, pr187 ? GROUP_MUON : GROUP_TOKEN, INIT_NORMAL,
                  0.01f, DT_BF16);
        in = INIT_ZERO, ia = 0;
        if (pr187)
            linear_init(cfg, m, "bigram_hash.proj", d, m->db, INIT_UNIFORM, 1.0f / sqrtf((float)m->db), &in, &ia);
        m->i_bg_proj = add_param(m, cap, "bigram_hash.proj.weight", 2, d, m->db, GROUP_MUON, in, ia, DT_F32);
        m->params[m->i_bg_proj].linear = 1;
    } else if (m->bigram == 2) { /* PR #315 BigramHashEmbedding: scale 0.05, zero embed, proj zeroed by its
                                    constructor and re-initialised by PGOLF_INIT_STYLE=ortho_mup */
        add_param(m, cap, "bigram.scale", 0, 1, 1, GROUP_SCALAR, INIT_CONST, 0.05f, DT_F32);
        add_param(m, cap, "bigram.embed.weight", 2, m->nb, m->db, GROUP_TOKEN, INIT_ZERO, 0, DT_BF16);
        if (m->db != d) {
            linear_init(cfg, m, "bigram.proj", d, m->db, INIT_ZERO, 0, &in, &ia);
            m->i_bg_proj = add_param(m, cap, "bigram.proj.weight", 2, d, m->db, side_grp, in, ia, DT_F32);
            m->params[m->i_bg_proj].linear = 1;
        }
    }
    if (m->smear == 1) add_param(m, cap, "smeargate.gate", 1, d, 1, GROUP_SCALAR, INIT_CONST, 3.0f, DT_F32);
    if (m->smear == 2) add_param(m, cap, "smear.gate", 1, d, 1, GROUP_SCALAR, INIT_ZERO, 0, DT_F32);
    if (m->pre_enrich) { /* PR #187: nn.Sequential(CastedLinear d->pe, GELU, CastedLinear pe->d), Muon */
        const int pe = m->pre_enrich;
        linear_init(cfg, m, "pre_enrich.0", pe, d, INIT_UNIFORM, 1.0f / sqrtf((float)d), &in, &ia);
        m->params[add_param(m, cap, "pre_enrich.0.weight", 2, pe, d, GROUP_MUON, in, ia, DT_F32)].linear = 1;
        linear_init(cfg, m, "pre_enrich.2", d, pe, INIT_UNIFORM, 1.0f / sqrtf((float)pe), &in, &ia);
        m->params[add_param(m, cap, "pre_enrich.2.weight", 2, d, pe, GROUP_MUON, in, ia, DT_F32)].linear = 1;
    }
    const float bound = 1.0f / sqrtf((float)d); /* nn.Linear default U(+-1/sqrt(fan_in)) */
    for (int l = 0; l < m->L; l++) {
        struct {
            const char *suffix;
            int ndim;
            int64_t r, c;
            param_init init;
            float a;
            int linear; /* a Linear without _zero_init: PGOLF_INIT_STYLE applies */
        } ps[] = {
            {"attn_scale", 1, d, 1, INIT_ONES, 0, 0},
            {"mlp_scale", 1, d, 1, INIT_ONES, 0, 0},
            {"resid_mix", 2, 2, d, INIT_RESID_MIX, 0, 0},
            {"attn.c_q.weight", 2, hd, d, INIT_UNIFORM, bound, 1},
            {"attn.c_k.weight", 2, kvd, d, INIT_UNIFORM, bound, 1},
            {"attn.c_v.weight", 2, kvd, d, INIT_UNIFORM, bound, 1},
            {"attn.proj.weight", 2, d, hd, INIT_ZERO, 0, 0},
            {"attn.q_gain", 1, m->H, 1, INIT_CONST, (float)cfg->qk_gain_init, 0},
            {"mlp.fc.weight", 2, m->hidden, d, INIT_UNIFORM, bound, 1},
            {"mlp.proj.weight", 2, d, m->hidden, INIT_ZERO, 0, 0},
        };
        for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
            snprintf(nm, sizeof(nm), "blocks.%d.%s", l, ps[k].suffix);
            /* spec §2.5: 2-D block params not matching a control pattern -> Muon; the rest -> scalar Adam */
            param_group grp = (ps[k].ndim == 2 && !name_matches_patterns(nm, ctrl)) ? GROUP_MUON : GROUP_SCALAR;
            in = ps[k].init;
            ia = ps[k].a;
            if (ps[k].linear) linear_init(cfg, m, nm, ps[k].r, ps[k].c, ps[k].init, ps[k].a, &in, &ia);
            int pi = add_param(m, cap, nm, ps[k].ndim, ps[k].r, ps[k].c, grp, in, ia, DT_F32);
            m->params[pi].layer = l;
            m->params[pi].linear = ps[k].ndim == 2 && strcmp(ps[k].suffix, "resid_mix"); /* the block's CastedLinears */
            if (!strcmp(ps[k].suffix, "resid_mix") && m->lanes == 1 && l >= m->par_from) {
                /* PR #1289's parallel block: the MLP lane's x0 mix [ones; zeros], route (4 ones) */
                snprintf(nm, sizeof(nm), "blocks.%d.resid_mix_mlp", l);
                m->params[add_param(m, cap, nm, 2, 2, d, GROUP_SCALAR, INIT_RESID_MIX, 0, DT_F32)].layer = l;
                snprintf(nm, sizeof(nm), "blocks.%d.route", l);
                m->params[add_param(m, cap, nm, 1, 4, 1, GROUP_SCALAR, INIT_ONES, 0, DT_F32)].layer = l;
            }
        }
    }
    if (m->ve_dim) { /* PR #1311/#1392 value embeddings */
        add_param(m, cap, "ve_shared.embed.weight", 2, m->V, m->ve_dim, GROUP_TOKEN, INIT_NORMAL, 0.01f, DT_BF16);
        if (m->ve_dim != kvd) {
            linear_init(cfg, m, "ve_shared.proj", kvd, m->ve_dim, INIT_ZERO, 0, &in, &ia);
            m->i_ve_proj = add_param(m, cap, "ve_shared.proj.weight", 2, kvd, m->ve_dim, side_grp, in, ia, DT_F32);
            m->params[m->i_ve_proj].linear = 1;
        }
        add_param(m, cap, "ve_shared.scale", 0, 1, 1, GROUP_SCALAR, INIT_CONST, 0.1f, DT_F32);
        for (int k = 0; k < m->ve_n; k++) {
            snprintf(nm, sizeof(nm), "ve_layer_scales.%d", k);
            add_param(m, cap, nm, 1, 1, 1, GROUP_SCALAR, INIT_ONES, 0, DT_F32);
        }
    }
    m->i_lm_head = m->tied ? -1 : add_param(m, cap, "lm_head.weight", 2, m->V, d, GROUP_HEAD, INIT_ZERO, 0, DT_F32);
    if (!m->tied) m->params[m->i_lm_head].linear = 1;
}

static void set_views(gpt_model *m) {
    float *w = m->w;
    m->blk = xcalloc((size_t)m->L, sizeof(block_params));
    for (int l = 0; l < m->L; l++) {
        m->blk[l].parallel = !m->lanes && l >= m->par_from;
        m->blk[l].lane = m->lanes && l >= m->par_from;
    }
    if (!w) return; /* a sizing build has no weights to view */
    m->tok_emb = w + m->params[m->i_tok_emb].offset;
    m->lm_head = m->tied ? NULL : w + m->params[m->i_lm_head].offset;
    m->skip_weights = m->smear_gate = m->bigram_table = m->bigram_proj = m->bigram_scale = NULL;
    m->ve_embed = m->ve_proj = m->ve_scale = NULL;
    m->lane_merge = m->pe_w1 = m->pe_w2 = NULL;
    for (int i = 0; i < m->n_params; i++) {
        const char *n = m->params[i].name;
        float *p = w + m->params[i].offset;
        if (!strcmp(n, "skip_weights")) m->skip_weights = p;
        else if (!strcmp(n, "smeargate.gate") || !strcmp(n, "smear.gate")) m->smear_gate = p;
        else if (!strcmp(n, "bigram_hash.table.weight") || !strcmp(n, "bigram.embed.weight")) m->bigram_table = p;
        else if (!strcmp(n, "bigram_hash.proj.weight") || !strcmp(n, "bigram.proj.weight")) m->bigram_proj = p;
        else if (!strcmp(n, "bigram.scale")) m->bigram_scale = p;
        else if (!strcmp(n, "ve_shared.embed.weight")) m->ve_embed = p;
        else if (!strcmp(n, "ve_shared.proj.weight")) m->ve_proj = p;
        else if (!strcmp(n, "ve_shared.scale")) m->ve_scale = p;
        else if (!strcmp(n, "lane_merge")) m->lane_merge = p;
        else if (!strcmp(n, "pre_enrich.0.weight")) m->pe_w1 = p;
        else if (!strcmp(n, "pre_enrich.2.weight")) m->pe_w2 = p;
        int l, k;
        if (sscanf(n, "ve_layer_scales.%d", &k) == 1) m->blk[m->ve_layer[k]].ve_scale = p;
        if (sscanf(n, "recur_scales.%d", &k) == 1) m->recur_scale[k] = p;
        char rest[96];
        if (sscanf(n, "blocks.%d.%95s", &l, rest) == 2) {
            block_params *b = &m->blk[l];
            if (!strcmp(rest, "attn_scale")) b->attn_scale = p;
            else if (!strcmp(rest, "mlp_scale")) b->mlp_scale = p;
            else if (!strcmp(rest, "resid_mix")) b->resid_mix = p;
            else if (!strcmp(rest, "resid_mix_mlp")) b->resid_mix_mlp = p;
            else if (!strcmp(rest, "route")) b->route = p;
            else if (!strcmp(rest, "attn.c_q.weight")) b->c_q = p;
            else if (!strcmp(rest, "attn.c_k.weight")) b->c_k = p;
            else if (!strcmp(rest, "attn.c_v.weight")) b->c_v = p;
            else if (!strcmp(rest, "attn.proj.weight")) b->proj = p;
            else if (!strcmp(rest, "attn.q_gain")) b->q_gain = p;
            else if (!strcmp(rest, "mlp.fc.weight")) b->fc = p;
            else if (!strcmp(rest, "mlp.proj.weight")) b->mproj = p;
        }
    }
}

/* pointer into the compute-weight arena for a master pointer */
static const pg_wc *WC(const gpt_model *m, const float *master) {
    return (const pg_wc *)((const char *)m->wc + (size_t)(master - m->w) * m->ops->wc_bytes);
}
/* the compute weight of a CastedLinear (a `linear` parameter): its fake-quantised copy while a
 * training forward runs with QAT */
static const pg_wc *WL(const gpt_model *m, const float *master) {
    if (!m->qat_now) return WC(m, master);
    return (const pg_wc *)((const char *)m->wq + (size_t)(master - m->w) * m->ops->wc_bytes);
}
/* the compute weight of a block matrix: as WL, unless the running QAT leaves the blocks alone */
static const pg_wc *WB(const gpt_model *m, const float *master) {
    return m->qat_blocks ? WL(m, master) : WC(m, master);
}
/* corresponding gradient pointer */
static float *GR(const gpt_model *m, const float *master) { return m->g + (master - m->w); }

/* backend memory of the model: every allocation of a build counted in m->dev_bytes (a sizing
 * build only counts: NULL) */
static void *balloc(gpt_model *m, size_t bytes) {
    m->dev_bytes += bytes;
    return m->sizing ? NULL : m->ops->alloc(bytes);
}
static pg_act *aalloc(gpt_model *m, size_t n) { return balloc(m, n * m->ops->act_bytes); }
static float *falloc(gpt_model *m, size_t n) { return balloc(m, n * sizeof(float)); }

/* cos/sin (T, rope_dims/2). The baseline's tables (spec §2.3, §7.1): bf16 inv_freq and bf16
 * positions. PR #315's Rotary for T above its hard-coded 1024 (spec §4.2): the NTK base
 * base*(T/1024)^(rd/(rd-2)), fp32 inv_freq and positions. cos/sin are rounded to bf16 at use. */
static void build_rope(gpt_model *m, const pg_config *cfg) {
    const int rd = m->rope_dims, half = rd / 2, T = m->T;
    const size_t bytes = (size_t)T * half * sizeof(float);
    m->rope_cos = balloc(m, bytes);
    m->rope_sin = balloc(m, bytes);
    if (m->sizing) return; /* counted, nothing to fill */
    const int ntk = cfg->rope_ntk && T > cfg->rope_ntk_ref_len;
    const int bf16_pos = cfg->bf16_rope_table && !ntk;
    double base = cfg->rope_base;
    if (ntk) base *= pow((double)T / (double)cfg->rope_ntk_ref_len, (double)rd / (double)(rd - 2));
    float *c = xmalloc(bytes), *s = xmalloc(bytes);
    for (int j = 0; j < half; j++) {
        /* inv_freq = 1 / base^(2j/rope_dims), in fp32 as torch computes it */
        float ex = (float)(2 * j) / (float)rd;
        float inv = 1.0f / powf((float)base, ex);
        if (bf16_pos) inv = pg_round_bf16(inv);
        for (int t = 0; t < T; t++) {
            float p = bf16_pos ? pg_round_bf16((float)t) : (float)t;
            float ang = p * inv;
            float cv = cosf(ang), sv = sinf(ang);
            if (cfg->bf16_rope_table) cv = pg_round_bf16(cv), sv = pg_round_bf16(sv);
            c[(size_t)t * half + j] = cv;
            s[(size_t)t * half + j] = sv;
        }
    }
    m->ops->to_device(m->rope_cos, c, bytes);
    m->ops->to_device(m->rope_sin, s, bytes);
    free(c);
    free(s);
}

/* the shape fields of m from the configuration (everything build_table needs) */
static void set_shape(gpt_model *m, const pg_config *cfg) {
    m->V = (int)cfg->vocab_size;
    m->d = (int)cfg->model_dim;
    m->L = (int)cfg->num_layers;
    m->H = (int)cfg->num_heads;
    m->Hk = (int)cfg->num_kv_heads;
    m->D = m->d / m->H;
    m->hidden = config_mlp_hidden(cfg);
    m->n_enc = m->L / 2;
    m->n_dec = m->L - m->n_enc;
    m->n_skip = m->n_enc < m->n_dec ? m->n_enc : m->n_dec;
    m->tied = cfg->tie_embeddings;
    m->rope_dims = cfg->rope_dims > 0 ? (int)cfg->rope_dims : m->D;
    m->xsa_from = cfg->xsa_last_n >= m->L ? 0 : m->L - (int)cfg->xsa_last_n;
    m->ln_scale = cfg->ln_scale;
    m->leaky = !strcmp(cfg->mlp_activation, "leaky_relu2");
    m->slope = (float)cfg->leaky_relu_slope;
    m->softcap = (float)cfg->logit_softcap;
    m->smear = config_smear_mode(cfg);
    PG_CHECK(m->smear >= 0);
    m->bigram = cfg->bigram_hash_buckets > 0 ? 1 : cfg->bigram_vocab_size > 0 ? 2 : 0;
    m->nb = (int)(m->bigram == 1 ? cfg->bigram_hash_buckets : cfg->bigram_vocab_size);
    m->qat_mode = !strcmp(cfg->qat_mode, "quantile") ? 1 : !strcmp(cfg->qat_mode, "rowmax") ? 2 : 0;
    m->late_thr = config_late_qat_threshold(cfg);
    m->late_after = cfg->lr_warmup_steps > 0 ? (long)cfg->lr_warmup_steps : -1;
    m->late_active = cfg->late_qat_active;
    m->late_low = (int)cfg->late_qat_clamp_low;
    m->late_side_only = !strcmp(cfg->opt_partition, "banked");
    m->ve_n = cfg->ve_enabled ? config_layer_list(cfg, cfg->ve_layers, m->ve_layer, 16) : 0;
    PG_CHECK(m->ve_n >= 0);
    m->ve_dim = m->ve_n ? (int)cfg->ve_dim : 0;
    m->recur_n = config_layer_list(cfg, cfg->recur_layers, m->recur_layer, 8);
    PG_CHECK(m->recur_n >= 0);
    m->recur_start = (long)cfg->recur_start_step;
    m->par_from = cfg->parallel_start_layer >= 0 ? (int)cfg->parallel_start_layer : m->L;
    m->db = (int)(m->bigram == 1 ? cfg->bigram_hash_dim : cfg->bigram_dim);
    m->pre_enrich = (int)cfg->pre_enrich;
    m->enc_recur = cfg->encoder_recurrence;
    m->overtone = cfg->overtone_init && m->tied; /* the record reshapes only a tied table */
    m->lanes = m->par_from >= m->L ? 0 : !strcmp(cfg->parallel_mode, "lanes1289") ? 1
                                       : !strcmp(cfg->parallel_mode, "lanes1334") ? 2 : 0;
    /* combinations that no record ran and that the reference does not define */
    if (m->enc_recur && (m->recur_n || m->par_from < m->L))
        pg_die("ENCODER_RECURRENCE=1 (PR #187) is not combined with RECUR_LAYERS or PARALLEL_START_LAYER");
    if (m->lanes && m->recur_n)
        pg_die("PGOLF_PARALLEL_MODE=%s is not combined with depth recurrence (RECUR_LAYERS)", cfg->parallel_mode);
    if (m->lanes && m->par_from < m->n_enc)
        pg_die("PGOLF_PARALLEL_MODE=%s: PARALLEL_START_LAYER=%d must be a decoder layer (>= NUM_LAYERS/2 = %d), as "
               "the records' lanes are", cfg->parallel_mode, m->par_from, m->n_enc);
}

size_t gpt_param_count_cfg(const pg_config *cfg) {
    gpt_model m;
    memset(&m, 0, sizeof(m));
    set_shape(&m, cfg);
    build_table(&m, cfg);
    free(m.params);
    return m.n_count;
}

/* pass p of the forward: the layers' passes, then the recurrence passes and PR #187's first encoder
 * passes, with what its activations hold */
typedef struct {
    block_acts *a;
    int xsa;   /* XSA's output (att_x) */
    int skip;  /* a decoder layer's skip sum (xin_skip) */
    int lane;  /* a lane block: the second lane's output (xout2) */
    int mix2;  /* PR #1289's MLP-lane mix (xm2) */
    int skip2; /* PR #1289's MLP-lane skip sum (xin_skip2) */
} pass_info;

static int n_passes(const gpt_model *m) { return m->L + m->recur_n + (m->enc_recur ? m->n_enc : 0); }

static pass_info pass_at(const gpt_model *m, int l) {
    const int rk = l - m->L, ek = l - m->L - m->recur_n;
    pass_info p = {0};
    p.a = rk < 0 ? &m->acts[l] : ek < 0 ? &m->racts[rk] : &m->eacts[ek];
    const int lay = rk < 0 ? l : ek < 0 ? m->recur_layer[rk] : ek;
    p.xsa = lay >= m->xsa_from;
    if (rk >= 0) return p; /* the second passes have no skip input or lanes of their own */
    const int j = l - m->n_enc;
    /* PR #1334 adds the skips of the lane blocks after the first to its dead single stream: dropped */
    const int dropped = m->lanes == 2 && l > m->par_from;
    p.skip = j >= 0 && j < m->n_skip && !dropped;
    p.lane = m->blk[l].lane;
    p.mix2 = p.lane && m->lanes == 1;
    p.skip2 = p.mix2 && l > m->par_from && p.skip;
    return p;
}

/* a pass's activations other than its outputs, for N rows (the caches k, v: NT) */
static void alloc_pass(gpt_model *m, block_acts *a, const pass_info *p, size_t N, size_t NT) {
    const size_t d = (size_t)m->d, hd = (size_t)m->H * m->D, kvd = (size_t)m->Hk * m->D, hid = (size_t)m->hidden;
    a->xm = aalloc(m, N * d);
    a->n1 = aalloc(m, N * d);
    a->q_raw = aalloc(m, N * hd);
    a->k_raw = aalloc(m, N * kvd);
    a->v = aalloc(m, NT * kvd);
    a->q = aalloc(m, N * hd);
    a->k = aalloc(m, NT * kvd);
    a->att = aalloc(m, N * hd);
    a->att_x = p->xsa ? aalloc(m, N * hd) : NULL;
    a->a = aalloc(m, N * d);
    a->xa = aalloc(m, N * d);
    a->n2 = aalloc(m, N * d);
    a->h = aalloc(m, N * hid);
    a->u = aalloc(m, N * hid);
    a->m = aalloc(m, N * d);
    a->xin_skip = p->skip ? aalloc(m, N * d) : NULL;
    a->xm2 = p->mix2 ? aalloc(m, N * d) : NULL;
    a->xin_skip2 = p->skip2 ? aalloc(m, N * d) : NULL;
    a->rstd1 = falloc(m, N);
    a->rstd_q = falloc(m, N * m->H);
    a->rstd_k = falloc(m, N * m->Hk);
    a->lse = falloc(m, N * m->H);
    a->rstd2 = falloc(m, N);
}

/* every buffer of a pass's activations (NULL where absent) */
#define PASS_BUFS(p_)                                                                                                \
    {(p_)->xm,     (p_)->n1,     (p_)->q_raw, (p_)->k_raw, (p_)->v,        (p_)->q,     (p_)->k,   (p_)->att,        \
     (p_)->att_x,  (p_)->a,      (p_)->xa,    (p_)->n2,    (p_)->h,        (p_)->u,     (p_)->m,   (p_)->xout,       \
     (p_)->xin_skip, (p_)->rstd1, (p_)->rstd_q, (p_)->rstd_k, (p_)->lse,   (p_)->rstd2, (p_)->xm2, (p_)->xout2,      \
     (p_)->xin_skip2}

/* the builds (gpt_form): a training model (every activation of every pass kept for the backward,
 * plus gradients and backward scratch), a decoder (the parameters, the key/value caches: B*T rows
 * of each pass's a->k, a->v, and one row per sequence of every other activation) and an evaluator
 * (full forwards only: each pass keeps its outputs, the other activations are one set shared by all
 * passes), GPT_EVALUATOR_SHARED reading the weights of `weights` (none when sizing). sizing: count
 * the backend bytes without allocating (gpt_build_bytes). */
static void build(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int B, int T, gpt_form form,
                  const gpt_model *weights, int sizing) {
    memset(m, 0, sizeof(*m));
    m->ops = ops;
    m->sizing = sizing;
    set_shape(m, cfg);
    /* the model calls only ops that this backend has */
    if (m->pre_enrich && (!ops->gelu_fwd || !ops->gelu_bwd))
        pg_die("PGOLF_PRE_ENRICH (PR #187's GELU pre-enrichment) is not implemented on the %s backend", ops->name);
    if (m->lanes == 1 && (!ops->lane_route_fwd || !ops->lane_route_bwd))
        pg_die("PGOLF_PARALLEL_MODE=lanes1289 (PR #1289's lane routing) is not implemented on the %s backend", ops->name);
    m->B = B;
    m->T = T;
    m->decoder = form == GPT_DECODER;
    m->eval_only = form == GPT_EVALUATOR || form == GPT_EVALUATOR_SHARED;
    const int train = form == GPT_TRAINING;
    build_table(m, cfg);

    if (weights) { /* an evaluator reading another model's weights */
        PG_CHECK(form == GPT_EVALUATOR_SHARED && weights->ops == ops && weights->n_floats == m->n_floats &&
                 weights->n_params == m->n_params);
        m->wsrc = weights;
        m->w = weights->w;
        m->wc = weights->wc;
    } else if (form != GPT_EVALUATOR_SHARED) {
        m->w = falloc(m, m->n_floats);
        if (m->w) ops->zero(m->w, m->n_floats * sizeof(float));
        m->w_owned = 1;
        if (ops->wc_bytes == sizeof(float) && !strcmp(ops->name, "cpu")) m->wc = (pg_wc *)m->w;
        else {
            m->wc = balloc(m, m->n_floats * ops->wc_bytes);
            m->wc_owned = 1;
        }
    }
    if (train) {
        m->g = falloc(m, m->n_floats);
        if (m->g) ops->zero(m->g, m->n_floats * sizeof(float));
        if (m->qat_mode || (m->late_thr > 0 && m->late_active)) m->wq = balloc(m, m->n_floats * ops->wc_bytes);
    }
    set_views(m);
    build_rope(m, cfg);

    /* N: rows of the per-token activations; the caches a->k, a->v always have B*T */
    const size_t N = m->decoder ? (size_t)B : (size_t)B * T, NT = (size_t)B * T, d = (size_t)m->d,
                 kvd = (size_t)m->Hk * m->D, hid = (size_t)m->hidden, hd = (size_t)m->H * m->D;
    m->idx = balloc(m, N * sizeof(int32_t));
    m->tgt = balloc(m, N * sizeof(int32_t));
    m->emb = aalloc(m, N * d);
    m->x0 = aalloc(m, N * d);
    m->nf = aalloc(m, N * d);
    m->logits = aalloc(m, N * (size_t)m->V);
    m->rstd0 = falloc(m, N);
    m->rstdf = falloc(m, N);
    m->losses = falloc(m, N);
    m->losses_host = xmalloc(N * sizeof(float));
    m->emb_mid = m->smear ? aalloc(m, N * d) : NULL;
    if (!m->eval_only) {
        m->dec_smear = m->smear ? aalloc(m, (size_t)B * 4 * d) : NULL;
        m->dec_kv = aalloc(m, (size_t)B * 2 * kvd);
    }
    m->dec_prev = xmalloc((size_t)B * sizeof(int32_t));
    if (m->bigram) {
        m->bidx = balloc(m, N * sizeof(int32_t));
        m->bidx_host = xmalloc(N * sizeof(int32_t));
        m->bg_e = aalloc(m, N * (size_t)m->db);
        m->bg_p = m->i_bg_proj >= 0 ? aalloc(m, N * d) : NULL;
        m->s_bg = train ? aalloc(m, N * (size_t)m->db) : NULL;
    }
    if (m->ve_dim) {
        m->ve_e = aalloc(m, N * (size_t)m->ve_dim);
        m->ve_p = m->i_ve_proj >= 0 ? aalloc(m, N * kvd) : NULL;
        m->ve = aalloc(m, N * kvd);
        if (train) {
            m->s_dve = aalloc(m, N * kvd);
            m->s_dvp = aalloc(m, N * kvd);
            m->s_dvee = aalloc(m, N * (size_t)m->ve_dim);
        }
    }
    m->acts = xcalloc((size_t)m->L, sizeof(block_acts));
    m->racts = xcalloc((size_t)(m->recur_n ? m->recur_n : 1), sizeof(block_acts));
    m->rec_out = xcalloc((size_t)(m->recur_n ? m->recur_n : 1), sizeof(pg_act *));
    for (int k = 0; k < m->recur_n; k++) m->rec_out[k] = aalloc(m, N * d);
    m->s_rec = m->recur_n && train ? aalloc(m, N * d) : NULL;
    m->eacts = xcalloc((size_t)(m->enc_recur && m->n_enc ? m->n_enc : 1), sizeof(block_acts));
    if (m->eval_only) { /* the shared set holds every buffer that any pass has */
        pass_info any = {0};
        for (int l = 0; l < n_passes(m); l++) {
            pass_info p = pass_at(m, l);
            any.xsa |= p.xsa, any.skip |= p.skip, any.mix2 |= p.mix2, any.skip2 |= p.skip2;
        }
        alloc_pass(m, &m->shared_acts, &any, N, NT);
    }
    for (int l = 0; l < n_passes(m); l++) {
        pass_info p = pass_at(m, l);
        block_acts *a = p.a;
        if (m->eval_only) { /* the shared buffers; a pass's own only what it lacks (NULL) */
            *a = m->shared_acts;
            if (!p.xsa) a->att_x = NULL;
            if (!p.skip) a->xin_skip = NULL;
            if (!p.mix2) a->xm2 = NULL;
            if (!p.skip2) a->xin_skip2 = NULL;
        } else
            alloc_pass(m, a, &p, N, NT);
        /* the outputs, read by later passes (the next layer, the skips, the recurrence blends, the lanes) */
        a->xout = aalloc(m, N * d);
        a->xout2 = p.lane ? aalloc(m, N * d) : NULL;
    }
    if (m->enc_recur) {
        m->er_x = aalloc(m, N * d);
        m->rstd_er = falloc(m, N);
    }
    if (m->pre_enrich) {
        const size_t pe = (size_t)m->pre_enrich;
        m->pe_h = aalloc(m, N * pe);
        m->pe_g = aalloc(m, N * pe);
        m->pe_out = aalloc(m, N * d);
        m->s_pe = train ? aalloc(m, N * pe) : NULL;
    }
    if (m->lanes) {
        m->lane_out = aalloc(m, N * d);
        if (train) {
            m->dx2 = aalloc(m, N * d);
            m->s_d3 = aalloc(m, N * d);
        }
    }
    m->dskip = xcalloc((size_t)(m->n_skip ? m->n_skip : 1), sizeof(pg_act *));
    if (!train) return;
    m->dx = aalloc(m, N * d);
    m->dx0 = aalloc(m, N * d);
    for (int j = 0; j < m->n_skip; j++) m->dskip[j] = aalloc(m, N * d);
    m->s_d = aalloc(m, N * d);
    m->s_d2 = aalloc(m, N * d);
    m->s_hid = aalloc(m, N * hid);
    m->s_hd = aalloc(m, N * hd);
    m->s_dq = aalloc(m, N * hd);
    m->s_dk = aalloc(m, N * kvd);
    m->s_dv = aalloc(m, N * kvd);
    m->s_dv2 = m->xsa_from < m->L ? aalloc(m, N * kvd) : NULL;
    m->s_dqr = aalloc(m, N * hd);
    m->s_dkr = aalloc(m, N * kvd);
}

void gpt_build(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int B, int T) {
    build(m, cfg, ops, B, T, GPT_TRAINING, NULL, 0);
}

void gpt_build_decoder(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int nb, int T) {
    build(m, cfg, ops, nb, T, GPT_DECODER, NULL, 0);
}

void gpt_build_eval(gpt_model *m, const pg_config *cfg, const pg_ops *ops, int B, int T, const gpt_model *weights) {
    build(m, cfg, ops, B, T, weights ? GPT_EVALUATOR_SHARED : GPT_EVALUATOR, weights, 0);
}

size_t gpt_build_bytes(const pg_config *cfg, const pg_ops *ops, int B, int T, gpt_form form) {
    gpt_model m;
    build(&m, cfg, ops, B, T, form, NULL, 1);
    const size_t bytes = m.dev_bytes;
    gpt_free(&m);
    return bytes;
}

void gpt_free(gpt_model *m) {
    const pg_ops *o = m->ops;
    if (!o) return;
    if (m->w_owned) o->free(m->w);
    o->free(m->g);
    if (m->wc_owned) o->free(m->wc);
    o->free(m->wq);
    o->free(m->rope_cos);
    o->free(m->rope_sin);
    o->free(m->idx);
    o->free(m->tgt);
    o->free(m->emb);
    o->free(m->x0);
    o->free(m->nf);
    o->free(m->logits);
    o->free(m->rstd0);
    o->free(m->rstdf);
    o->free(m->losses);
    o->free(m->emb_mid);
    o->free(m->dec_smear);
    o->free(m->dec_kv);
    free(m->dec_prev);
    o->free(m->bidx);
    o->free(m->bg_e);
    o->free(m->bg_p);
    o->free(m->s_bg);
    free(m->bidx_host);
    for (int l = 0; l < n_passes(m); l++) {
        block_acts *a = pass_at(m, l).a;
        if (m->eval_only) { /* a pass's own buffers: its outputs */
            o->free(a->xout);
            o->free(a->xout2);
            continue;
        }
        void *ps[] = PASS_BUFS(a);
        for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) o->free(ps[k]);
    }
    if (m->eval_only) {
        void *ps[] = PASS_BUFS(&m->shared_acts);
        for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) o->free(ps[k]);
    }
    for (int j = 0; j < m->n_skip; j++) o->free(m->dskip[j]);
    for (int k = 0; k < m->recur_n; k++) o->free(m->rec_out[k]);
    void *vs[] = {m->ve_e, m->ve_p, m->ve, m->s_dve, m->s_dvp, m->s_dvee, m->s_rec, m->er_x, m->rstd_er, m->pe_h,
                  m->pe_g, m->pe_out, m->s_pe, m->lane_out, m->dx2, m->s_d3};
    for (size_t k = 0; k < sizeof(vs) / sizeof(vs[0]); k++) o->free(vs[k]);
    free(m->racts);
    free(m->eacts);
    free(m->rec_out);
    void *ss[] = {m->dx,   m->dx0,  m->s_d,   m->s_d2,  m->s_hid, m->s_hd,
                  m->s_dq, m->s_dk, m->s_dv, m->s_dv2, m->s_dqr, m->s_dkr};
    for (size_t k = 0; k < sizeof(ss) / sizeof(ss[0]); k++) o->free(ss[k]);
    free(m->dskip);
    free(m->acts);
    free(m->blk);
    free(m->params);
    free(m->losses_host);
    memset(m, 0, sizeof(*m));
}

size_t gpt_param_count(const gpt_model *m) { return m->n_count; }

double gpt_train_flops_per_token(const gpt_model *m) {
    return 6.0 * (double)m->n_count + 6.0 * (double)m->L * (double)m->T * (double)m->d;
}

void gpt_sync_weights(gpt_model *m) {
    m->ops->weights_to_compute(m->wc, m->w, m->n_floats);
    m->wq_mode = 0;
}

/* wq from the masters: the grid `mode` (ops.h fake_quant_rows) for every linear weight */
static void refresh_wq(gpt_model *m, int mode) {
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        if (!p->linear || (p->layer >= 0 && !m->qat_blocks)) continue;
        pg_wc *dst = (pg_wc *)((char *)m->wq + p->offset * m->ops->wc_bytes);
        m->ops->fake_quant_rows(dst, m->w + p->offset, (int)p->shape[0], (int)p->shape[1], mode, m->late_low);
    }
    m->wq_mode = mode;
}

int gpt_step_begin(gpt_model *m, long step, double mult) {
    int sw = 0;
    if (m->recur_n && !m->recur_on && step >= m->recur_start) {
        m->recur_on = 1;
        sw |= GPT_SWITCHED_RECUR;
    }
    if (m->late_thr > 0 && !m->late_qat && mult < m->late_thr && step > m->late_after) {
        m->late_qat = 1;
        sw |= GPT_SWITCHED_LATE_QAT;
    }
    return sw;
}

void gpt_init(gpt_model *m, const pg_config *cfg, uint64_t seed) {
    (void)cfg;
    float *host = xcalloc(m->n_floats, sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        float *w = host + p->offset;
        /* an independent stream per tensor, so adding a parameter does not reshuffle the others */
        rng_t r;
        uint64_t s = seed * 0x9e3779b97f4a7c15ull;
        for (const char *c = p->name; *c; c++) s = (s ^ (uint64_t)(unsigned char)*c) * 0x100000001b3ull;
        rng_seed(&r, s);
        if (p->init == INIT_ORTHO) orthogonal_fill(w, (int)p->shape[0], (int)p->shape[1], p->init_a, &r);
        if (p->init == INIT_OVERTONE) overtone_fill(w, (int)p->shape[0], (int)p->shape[1], p->init_a, &r);
        for (size_t k = 0; k < p->numel; k++) {
            float v = 0;
            switch (p->init) {
            case INIT_ZERO: v = 0; break;
            case INIT_ONES: v = 1; break;
            case INIT_CONST: v = p->init_a; break;
            case INIT_NORMAL: v = (float)(rng_normal(&r) * p->init_a); break;
            case INIT_UNIFORM: v = (float)((2.0 * rng_uniform(&r) - 1.0) * p->init_a); break;
            case INIT_RESID_MIX: v = k < (size_t)p->shape[1] ? 1.0f : 0.0f; break;
            case INIT_ORTHO:
            case INIT_OVERTONE: v = w[k]; break;
            }
            /* the records build in fp32, cast the model to bf16 and back: every initial value is bf16 */
            w[k] = pg_round_bf16(v);
        }
    }
    m->ops->to_device(m->w, host, m->n_floats * sizeof(float));
    free(host);
    gpt_sync_weights(m);
}

void gpt_zero_grad(gpt_model *m) {
    PG_CHECK(!m->decoder);
    m->ops->zero(m->g, m->n_floats * sizeof(float));
}

/* ---- forward / backward ---- */

/* index k of a recurring (encoder) layer l while depth recurrence runs, else -1 */
static int recur_index(const gpt_model *m, int l) {
    if (!m->recur_on || l >= m->n_enc) return -1;
    for (int k = 0; k < m->recur_n; k++)
        if (m->recur_layer[k] == l) return k;
    return -1;
}

/* the residual stream after layer l (the blend of its two passes if it recurs; the attention lane
 * of a lane block) and before layer l (x0 or PR #187's normed first encoder pass, the skip sum of a
 * decoder layer, or the previous layer's output) */
static const pg_act *layer_output(const gpt_model *m, int l) {
    int k = recur_index(m, l);
    return k >= 0 ? m->rec_out[k] : m->acts[l].xout;
}
static const pg_act *layer_input(const gpt_model *m, int l) {
    if (m->acts[l].xin_skip) return m->acts[l].xin_skip;
    if (l == 0) return m->enc_recur ? m->er_x : m->x0;
    return layer_output(m, l - 1);
}
/* the MLP lane entering lane block l: the single stream at the first lane block */
static const pg_act *lane2_input(const gpt_model *m, int l) {
    if (l == m->par_from) return layer_input(m, l);
    if (m->acts[l].xin_skip2) return m->acts[l].xin_skip2;
    return m->acts[l - 1].xout2;
}
/* the trunk's output, the final norm's input: the lanes' blend, or the last layer's output */
static const pg_act *trunk_output(const gpt_model *m) { return m->lanes ? m->lane_out : layer_output(m, m->L - 1); }

/* LN_SCALE factor of layer l (spec §4.2) */
static float ln_scale(const gpt_model *m, int l) { return m->ln_scale ? (float)(1.0 / sqrt(l + 1.0)) : 1.0f; }

/* the attention branch of block l: a->a = proj(attn(s*n1)) from the normalised input a->n1. While
 * decoding (one token per sequence at position dec_pos, N = dec_nb rows), the new keys and values
 * are made in dec_kv and copied to row dec_pos of each sequence's rows of a->k and a->v, whose rows
 * 0..dec_pos are the pass's cache; RoPE takes that position's row of the tables, and each token
 * attends over its sequence's cache. */
static void attn_branch_fwd(gpt_model *m, int l, block_acts *a, int N, int B) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d, hd = m->H * m->D, kvd = m->Hk * m->D;
    const float s = ln_scale(m, l);
    pg_act *k = a->k, *v = a->v;
    const float *cs = m->rope_cos, *sn = m->rope_sin;
    int T = m->T;
    if (m->decoding) {
        const size_t rope = (size_t)m->dec_pos * (m->rope_dims / 2);
        k = m->dec_kv;
        v = (pg_act *)((char *)m->dec_kv + (size_t)N * kvd * o->act_bytes);
        cs += rope, sn += rope, T = 1;
    }
    o->matmul_fwd(a->q_raw, a->n1, WB(m, p->c_q), N, d, hd);
    o->matmul_fwd(a->k_raw, a->n1, WB(m, p->c_k), N, d, kvd);
    o->matmul_fwd(v, a->n1, WB(m, p->c_v), N, d, kvd);
    if (s != 1.0f) { /* (s*n1) W^T = s*(n1 W^T) */
        o->act_scale(a->q_raw, (size_t)N * hd, s);
        o->act_scale(a->k_raw, (size_t)N * kvd, s);
        o->act_scale(v, (size_t)N * kvd, s);
    }
    if (p->ve_scale) o->resid_fwd(v, v, m->ve, p->ve_scale, N * kvd, 1); /* v += ve_layer_scale * ve */
    o->qk_prep_fwd(a->q, k, a->rstd_q, a->rstd_k, a->q_raw, a->k_raw, p->q_gain, cs, sn, N, T, m->H, m->Hk, m->D,
                   m->rope_dims);
    if (m->decoding) {
        const size_t row = (size_t)kvd * o->act_bytes, at = (size_t)m->dec_pos * row, pitch = (size_t)m->T * row;
        o->copy_rows((char *)a->k + at, pitch, k, row, row, (size_t)N);
        o->copy_rows((char *)a->v + at, pitch, v, row, row, (size_t)N);
        o->attn_decode(a->att, a->q, a->k, a->v, N, m->dec_pos + 1, m->T, m->H, m->Hk, m->D);
    } else
        o->attn_fwd(a->att, a->lse, a->q, a->k, a->v, B, m->T, m->H, m->Hk, m->D);
    const pg_act *y = a->att;
    if (a->att_x) { /* XSA */
        o->xsa_fwd(a->att_x, a->att, v, N, m->H, m->Hk, m->D);
        y = a->att_x;
    }
    o->matmul_fwd(a->a, y, WB(m, p->proj), N, hd, d);
}

/* the MLP branch of block l: a->m = mlp(s*in) */
static void mlp_branch_fwd(gpt_model *m, int l, block_acts *a, const pg_act *in, int N) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const float s = ln_scale(m, l);
    o->matmul_fwd(a->h, in, WB(m, p->fc), N, m->d, m->hidden);
    if (s != 1.0f) o->act_scale(a->h, (size_t)N * m->hidden, s);
    if (m->leaky) o->leaky_relu2_fwd(a->u, a->h, (size_t)N * m->hidden, m->slope);
    else o->relu2_fwd(a->u, a->h, (size_t)N * m->hidden);
    o->matmul_fwd(a->m, a->u, WB(m, p->mproj), N, m->hidden, m->d);
}

/* block l on the stream x with the activations a (a layer's pass, its recurrence pass, or PR #187's
 * first encoder pass) */
static void block_fwd(gpt_model *m, int l, block_acts *a, const pg_act *x, int N, int B) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d;
    o->mix_norm_fwd(a->xm, a->n1, a->rstd1, x, m->x0, p->resid_mix, N, d);
    attn_branch_fwd(m, l, a, N, B);
    o->resid_fwd(a->xa, a->xm, a->a, p->attn_scale, N, d);
    const pg_act *mlp_in = a->n1; /* parallel (PR #1392): both branches read rmsnorm(xm) */
    if (!p->parallel) {
        o->rmsnorm_fwd(a->n2, a->rstd2, a->xa, N, d);
        mlp_in = a->n2;
    }
    mlp_branch_fwd(m, l, a, mlp_in, N);
    o->resid_fwd(a->xout, a->xa, a->m, p->mlp_scale, N, d);
}

/* lane block l (spec §3.4) on the attention lane xa and the MLP lane xb; outputs a->xout (attention
 * lane), a->xout2 (MLP lane).
 *   PR #1289: xia = mix(xa, x0), xib = mix_mlp(xb, x0), da = attn_scale*attn(rmsnorm(xia)),
 *             dm = mlp_scale*mlp(rmsnorm(xib)); xa' = xa + r0 da + r2 dm, xb' = xb + r1 da + r3 dm
 *   PR #1334: xia = mix(xa, x0); xa' = xia + attn_scale*attn(rmsnorm(xia)); xb' = xb + mlp_scale*mlp(rmsnorm(xb)) */
static void lane_block_fwd(gpt_model *m, int l, block_acts *a, const pg_act *xa, const pg_act *xb, int N, int B) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d;
    o->mix_norm_fwd(a->xm, a->n1, a->rstd1, xa, m->x0, p->resid_mix, N, d);
    attn_branch_fwd(m, l, a, N, B);
    if (m->lanes == 1) {
        o->mix_norm_fwd(a->xm2, a->n2, a->rstd2, xb, m->x0, p->resid_mix_mlp, N, d);
        mlp_branch_fwd(m, l, a, a->n2, N);
        o->lane_route_fwd(a->xout, xa, a->a, p->attn_scale, p->route + 0, a->m, p->mlp_scale, p->route + 2, N, d);
        o->lane_route_fwd(a->xout2, xb, a->a, p->attn_scale, p->route + 1, a->m, p->mlp_scale, p->route + 3, N, d);
    } else {
        o->resid_fwd(a->xout, a->xm, a->a, p->attn_scale, N, d);
        o->rmsnorm_fwd(a->n2, a->rstd2, xb, N, d);
        mlp_branch_fwd(m, l, a, a->n2, N);
        o->resid_fwd(a->xout2, xb, a->m, p->mlp_scale, N, d);
    }
}

/* from dm (the gradient wrt a->m): the MLP weights' gradients; d_in (+)= the gradient wrt its input */
static void mlp_branch_bwd(gpt_model *m, int l, block_acts *a, const pg_act *in, const pg_act *dm, pg_act *d_in,
                           int accumulate, int N) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const float s = ln_scale(m, l);
    o->matmul_bwd(m->s_hid, GR(m, p->mproj), dm, a->u, WB(m, p->mproj), N, m->hidden, m->d, 0);
    if (m->leaky) o->leaky_relu2_bwd(m->s_hid, m->s_hid, a->h, (size_t)N * m->hidden, m->slope);
    else o->relu2_bwd(m->s_hid, m->s_hid, a->h, (size_t)N * m->hidden);
    if (s != 1.0f) o->act_scale(m->s_hid, (size_t)N * m->hidden, s);
    o->matmul_bwd(d_in, GR(m, p->fc), m->s_hid, in, WB(m, p->fc), N, m->d, m->hidden, accumulate);
}

/* from da (the gradient wrt a->a): the attention weights' gradients (VE layers accumulate d ve into
 * s_dve); d_n1 (+)= the gradient wrt a->n1 */
static void attn_branch_bwd(gpt_model *m, int l, block_acts *a, const pg_act *da, pg_act *d_n1, int accumulate, int N,
                            int B) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d, hd = m->H * m->D, kvd = m->Hk * m->D;
    const float s = ln_scale(m, l);
    o->matmul_bwd(m->s_hd, GR(m, p->proj), da, a->att_x ? a->att_x : a->att, WB(m, p->proj), N, hd, d, 0);
    if (a->att_x) o->xsa_bwd(m->s_hd, m->s_dv2, m->s_hd, a->att, a->v, N, m->H, m->Hk, m->D); /* XSA */
    o->attn_bwd(m->s_dq, m->s_dk, m->s_dv, m->s_hd, a->q, a->k, a->v, a->att, a->lse, B, m->T, m->H, m->Hk, m->D);
    if (a->att_x) o->add_inplace(m->s_dv, m->s_dv2, (size_t)N * kvd);
    if (p->ve_scale) /* v = s*c_v(n1) + ve_layer_scale*ve */
        o->resid_bwd(m->s_dve, GR(m, p->ve_scale), m->s_dv, m->ve, p->ve_scale, N * kvd, 1, 1);
    o->qk_prep_bwd(m->s_dqr, m->s_dkr, GR(m, p->q_gain), m->s_dq, m->s_dk, a->q_raw, a->k_raw, a->rstd_q, a->rstd_k,
                   p->q_gain, m->rope_cos, m->rope_sin, N, m->T, m->H, m->Hk, m->D, m->rope_dims);
    if (s != 1.0f) {
        o->act_scale(m->s_dqr, (size_t)N * hd, s);
        o->act_scale(m->s_dkr, (size_t)N * kvd, s);
        o->act_scale(m->s_dv, (size_t)N * kvd, s);
    }
    o->matmul_bwd(d_n1, GR(m, p->c_q), m->s_dqr, a->n1, WB(m, p->c_q), N, d, hd, accumulate);
    o->matmul_bwd(d_n1, GR(m, p->c_k), m->s_dkr, a->n1, WB(m, p->c_k), N, d, kvd, 1);
    o->matmul_bwd(d_n1, GR(m, p->c_v), m->s_dv, a->n1, WB(m, p->c_v), N, d, kvd, 1);
}

/* dxo: gradient wrt the block output on entry; on return it holds the gradient wrt the block
 * input x. */
static void block_bwd(gpt_model *m, int l, block_acts *a, const pg_act *x, int N, int B, pg_act *dxo) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d;
    /* MLP branch: xout = xa + mlp_scale * m */
    o->resid_bwd(m->s_d, GR(m, p->mlp_scale), dxo, a->m, p->mlp_scale, N, d, 0);
    mlp_branch_bwd(m, l, a, p->parallel ? a->n1 : a->n2, m->s_d, m->s_d2, 0, N);
    /* sequential: dxo is now d xa; parallel: s_d2 holds the MLP's part of d n1 */
    if (!p->parallel) o->rmsnorm_bwd(dxo, m->s_d2, a->n2, a->rstd2, N, d, 1);
    /* attention branch: xa = xm + attn_scale * a */
    o->resid_bwd(m->s_d, GR(m, p->attn_scale), dxo, a->a, p->attn_scale, N, d, 0);
    attn_branch_bwd(m, l, a, m->s_d, m->s_d2, p->parallel, N, B);
    o->rmsnorm_bwd(dxo, m->s_d2, a->n1, a->rstd1, N, d, 1); /* dxo is now d xm */
    /* xm = m0*x + m1*x0 */
    o->mix_bwd(dxo, m->dx0, GR(m, p->resid_mix), dxo, x, m->x0, p->resid_mix, N, d);
}

/* lane block l backward: dA, dB the gradients wrt a->xout, a->xout2 on entry, wrt its inputs xa, xb
 * on return */
static void lane_block_bwd(gpt_model *m, int l, block_acts *a, const pg_act *xa, const pg_act *xb, int N, int B,
                           pg_act *dA, pg_act *dB) {
    const pg_ops *o = m->ops;
    const block_params *p = &m->blk[l];
    const int d = m->d;
    if (m->lanes == 1) {
        float *gr = GR(m, p->route), *gsa = GR(m, p->attn_scale), *gsm = GR(m, p->mlp_scale);
        /* s_d = d a, s_d3 = d m from both lane updates; dA, dB pass through to xa, xb */
        o->lane_route_bwd(m->s_d, m->s_d3, gsa, gsm, gr + 0, gr + 2, dA, a->a, p->attn_scale, p->route + 0, a->m,
                          p->mlp_scale, p->route + 2, N, d, 0);
        o->lane_route_bwd(m->s_d, m->s_d3, gsa, gsm, gr + 1, gr + 3, dB, a->a, p->attn_scale, p->route + 1, a->m,
                          p->mlp_scale, p->route + 3, N, d, 1);
        mlp_branch_bwd(m, l, a, a->n2, m->s_d3, m->s_d2, 0, N);
        o->rmsnorm_bwd(m->s_d3, m->s_d2, a->n2, a->rstd2, N, d, 0); /* d xib */
        o->mix_bwd(m->s_d3, m->dx0, GR(m, p->resid_mix_mlp), m->s_d3, xb, m->x0, p->resid_mix_mlp, N, d);
        o->add_inplace(dB, m->s_d3, (size_t)N * d);
        attn_branch_bwd(m, l, a, m->s_d, m->s_d2, 0, N, B);
        o->rmsnorm_bwd(m->s_d3, m->s_d2, a->n1, a->rstd1, N, d, 0); /* d xia */
        o->mix_bwd(m->s_d3, m->dx0, GR(m, p->resid_mix), m->s_d3, xa, m->x0, p->resid_mix, N, d);
        o->add_inplace(dA, m->s_d3, (size_t)N * d);
    } else {
        /* MLP lane: xout2 = xb + mlp_scale * mlp(rmsnorm(xb)) */
        o->resid_bwd(m->s_d, GR(m, p->mlp_scale), dB, a->m, p->mlp_scale, N, d, 0);
        mlp_branch_bwd(m, l, a, a->n2, m->s_d, m->s_d2, 0, N);
        o->rmsnorm_bwd(dB, m->s_d2, a->n2, a->rstd2, N, d, 1);
        /* attention lane: xout = xia + attn_scale * attn(rmsnorm(xia)), xia = mix(xa, x0) */
        o->resid_bwd(m->s_d, GR(m, p->attn_scale), dA, a->a, p->attn_scale, N, d, 0);
        attn_branch_bwd(m, l, a, m->s_d, m->s_d2, 0, N, B);
        o->rmsnorm_bwd(dA, m->s_d2, a->n1, a->rstd1, N, d, 1);
        o->mix_bwd(dA, m->dx0, GR(m, p->resid_mix), dA, xa, m->x0, p->resid_mix, N, d);
    }
}

/* The bigram bucket of token cur at position t after token prev (spec §3.2, §4.2). Both records hash
 * across document boundaries (BOS is an ordinary token); only position 0 of each row is special. */
static int32_t bigram_bucket(const gpt_model *m, int32_t prev, int32_t cur, int t) {
    if (m->bigram == 1) /* PR #65/#187: int64 (prev*92821 + cur) mod buckets, prev = 0 at t = 0 */
        return (int32_t)(((int64_t)(t ? prev : 0) * 92821 + cur) % m->nb);
    if (t == 0) return m->nb - 1; /* PR #315: the reserved bucket Vb-1 */
    /* PR #315: (36313*cur ^ 27191*prev) in wrapping int32, Python's (non-negative) mod Vb-1 */
    const int32_t mod = m->nb - 1;
    const int32_t h = (int32_t)((36313u * (uint32_t)cur) ^ (27191u * (uint32_t)prev));
    const int32_t r = h % mod;
    return r < 0 ? r + mod : r;
}

/* the buckets of the host tokens x, per row of T (while decoding: of each sequence's token at dec_pos) */
static void bigram_buckets(gpt_model *m, const int32_t *x, int N) {
    for (int n = 0; n < N; n++) {
        if (m->decoding) m->bidx_host[n] = bigram_bucket(m, m->dec_prev[n], x[n], m->dec_pos);
        else m->bidx_host[n] = bigram_bucket(m, n % m->T ? x[n - 1] : 0, x[n], n % m->T);
    }
}

/* SmearGate on the rows of x into y (y must not alias x). While decoding, x holds each sequence's one
 * token: dec_smear (nb, 2, d) holds in its rows (b, 0) sequence b's previous input (zeros at
 * position 0) and in (b, 1) this one, smear runs on them as nb sequences of two, writing rows
 * (nb, 2, d) after them, and y is the second row of each. */
static void smear(gpt_model *m, pg_act *y, const pg_act *x, int N, int reverse) {
    const pg_ops *o = m->ops;
    if (!m->decoding) {
        o->smear_fwd(y, x, m->smear_gate, N, m->T, m->d, reverse);
        return;
    }
    const size_t row = (size_t)m->d * o->act_bytes, n = (size_t)N;
    char *s = (char *)m->dec_smear, *out = s + 2 * n * row;
    if (m->dec_pos == 0) o->zero(s, 2 * n * row);
    o->copy_rows(s + row, 2 * row, x, row, row, n);
    o->smear_fwd((pg_act *)out, (const pg_act *)s, m->smear_gate, 2 * N, 2, m->d, reverse);
    o->copy_rows(y, row, out + row, 2 * row, row, n);
    o->copy_rows(s, 2 * row, s + row, 2 * row, row, n); /* the next position's previous inputs */
}

/* x0 (N, d) from the tokens: embedding, bigram table, SmearGate, PR #187's pre-enrichment and the
 * embedding norm */
static void embed_fwd(gpt_model *m, const int32_t *x, int N) {
    const pg_ops *o = m->ops;
    const int d = m->d;
    o->embed_fwd(m->emb, m->idx, WC(m, m->tok_emb), N, d); /* e = tok_emb[idx] (N, d) */
    if (m->bigram) {
        bigram_buckets(m, x, N);
        o->to_device(m->bidx, m->bidx_host, (size_t)N * sizeof(int32_t));
        o->embed_fwd(m->bg_e, m->bidx, WC(m, m->bigram_table), N, m->db); /* (N, db) */
        const pg_act *b = m->bg_e;
        if (m->bigram_proj) {
            o->matmul_fwd(m->bg_p, m->bg_e, WL(m, m->bigram_proj), N, m->db, d); /* (N, d) */
            b = m->bg_p;
        }
        if (m->bigram_scale) o->resid_fwd(m->emb, m->emb, b, m->bigram_scale, N * d, 1); /* e += scale*b */
        else o->add_inplace(m->emb, b, (size_t)N * d);                                 /* e += b */
    }
    const pg_act *pre = m->emb; /* the embedding norm's input */
    if (m->smear == 1) {        /* PR #65, PR #187: smear before the norm */
        smear(m, m->emb_mid, m->emb, N, 0);
        pre = m->emb_mid;
    }
    if (m->pre_enrich) { /* PR #187: W2 gelu(W1 pre) */
        o->matmul_fwd(m->pe_h, pre, WL(m, m->pe_w1), N, d, m->pre_enrich);
        o->gelu_fwd(m->pe_g, m->pe_h, (size_t)N * m->pre_enrich);
        o->matmul_fwd(m->pe_out, m->pe_g, WL(m, m->pe_w2), N, m->pre_enrich, d);
        pre = m->pe_out;
    }
    if (m->smear == 2) { /* PR #315: x0 = smear(rmsnorm(.)) */
        o->rmsnorm_fwd(m->emb_mid, m->rstd0, pre, N, d);
        smear(m, m->x0, m->emb_mid, N, 1);
    } else
        o->rmsnorm_fwd(m->x0, m->rstd0, pre, N, d);
}

/* from dx0 (N, d), the gradient wrt x0: the gradients of the embedding-side parameters (scratch s_d, s_d2) */
static void embed_bwd(gpt_model *m, int N) {
    const pg_ops *o = m->ops;
    const int d = m->d, T = m->T;
    /* dn: the gradient wrt the norm's input; dp: wrt the pre-enrichment's input */
    pg_act *dn = m->smear == 1 && !m->pre_enrich ? m->s_d2 : m->s_d;
    if (m->smear == 2) {
        o->smear_bwd(m->s_d2, GR(m, m->smear_gate), m->dx0, m->emb_mid, m->smear_gate, N, T, d, 1);
        o->rmsnorm_bwd(dn, m->s_d2, m->emb_mid, m->rstd0, N, d, 0);
    } else
        o->rmsnorm_bwd(dn, m->dx0, m->x0, m->rstd0, N, d, 0);
    pg_act *dp = dn;
    if (m->pre_enrich) {
        dp = m->smear == 1 ? m->s_d2 : m->s_d;
        o->matmul_bwd(m->s_pe, GR(m, m->pe_w2), dn, m->pe_g, WL(m, m->pe_w2), N, m->pre_enrich, d, 0);
        o->gelu_bwd(m->s_pe, m->s_pe, m->pe_h, (size_t)N * m->pre_enrich);
        o->matmul_bwd(dp, GR(m, m->pe_w1), m->s_pe, m->smear == 1 ? m->emb_mid : m->emb, WL(m, m->pe_w1), N, d,
                      m->pre_enrich, 0);
    }
    if (m->smear == 1) o->smear_bwd(m->s_d, GR(m, m->smear_gate), dp, m->emb, m->smear_gate, N, T, d, 0);
    pg_act *de = m->s_d; /* d e (N, d) */
    o->embed_bwd(GR(m, m->tok_emb), de, m->idx, N, d);
    if (m->bigram) {
        const pg_act *db = de; /* d b */
        if (m->bigram_scale) {
            o->resid_bwd(m->s_d2, GR(m, m->bigram_scale), de, m->bigram_proj ? m->bg_p : m->bg_e, m->bigram_scale,
                         N * d, 1, 0);
            db = m->s_d2;
        }
        if (m->bigram_proj) {
            o->matmul_bwd(m->s_bg, GR(m, m->bigram_proj), db, m->bg_e, WL(m, m->bigram_proj), N, m->db, d, 0);
            db = m->s_bg;
        }
        o->embed_bwd(GR(m, m->bigram_table), db, m->bidx, N, m->db);
    }
}

/* the value embedding ve (N, Hk*D) = ve_shared.scale * proj(embed[idx]) (PR #1311/#1392) */
static void ve_fwd(gpt_model *m, int N) {
    const pg_ops *o = m->ops;
    const int kvd = m->Hk * m->D;
    o->embed_fwd(m->ve_e, m->idx, WC(m, m->ve_embed), N, m->ve_dim); /* (N, ve_dim) */
    const pg_act *p = m->ve_e;
    if (m->ve_proj) {
        o->matmul_fwd(m->ve_p, m->ve_e, WL(m, m->ve_proj), N, m->ve_dim, kvd);
        p = m->ve_p;
    }
    o->zero(m->ve, (size_t)N * kvd * o->act_bytes);
    o->resid_fwd(m->ve, m->ve, p, m->ve_scale, N * kvd, 1);
}

/* from s_dve (the VE layers' d ve): the gradients of the VE parameters */
static void ve_bwd(gpt_model *m, int N) {
    const pg_ops *o = m->ops;
    const int kvd = m->Hk * m->D;
    o->resid_bwd(m->s_dvp, GR(m, m->ve_scale), m->s_dve, m->ve_proj ? m->ve_p : m->ve_e, m->ve_scale, N * kvd, 1, 0);
    const pg_act *de = m->s_dvp;
    if (m->ve_proj) {
        o->matmul_bwd(m->s_dvee, GR(m, m->ve_proj), m->s_dvp, m->ve_e, WL(m, m->ve_proj), N, m->ve_dim, kvd, 0);
        de = m->s_dvee;
    }
    o->embed_bwd(GR(m, m->ve_embed), de, m->idx, N, m->ve_dim);
}

static void grads_ready(gpt_model *m, int l) {
    if (m->grads_ready) m->grads_ready(m->grads_ctx, l);
}

/* the blocks on x0 (N tokens in B_run rows): PR #187's first encoder pass, the layers with their
 * skips, recurrence passes and lanes; the result is trunk_output(m) */
static void trunk_fwd(gpt_model *m, int N, int B_run) {
    const pg_ops *o = m->ops;
    const int d = m->d;
    if (m->enc_recur) { /* PR #187: a first encoder pass (its skips discarded), then rmsnorm: layer 0's input */
        const pg_act *xe = m->x0;
        for (int l = 0; l < m->n_enc; l++) {
            block_fwd(m, l, &m->eacts[l], xe, N, B_run);
            xe = m->eacts[l].xout;
        }
        o->rmsnorm_fwd(m->er_x, m->rstd_er, xe, N, d);
    }
    /* encoder (a recurring layer: a second pass on its output, after the skip push, blended with
     * x + r*(block(x) - x)), then decoder with U-Net skips from the first passes; lane blocks carry
     * two streams (PR #1289 adds the skips to both, PR #1334 drops those after its first lane block) */
    for (int l = 0; l < m->L; l++) {
        block_acts *a = &m->acts[l];
        const int j = l - m->n_enc;
        if (a->xin_skip) {
            const pg_act *enc = m->acts[m->n_enc - 1 - j].xout;
            const float *sw = m->skip_weights + (size_t)j * d;
            o->resid_fwd(a->xin_skip, layer_output(m, l - 1), enc, sw, N, d);
            if (a->xin_skip2) o->resid_fwd(a->xin_skip2, m->acts[l - 1].xout2, enc, sw, N, d);
        }
        if (m->blk[l].lane) lane_block_fwd(m, l, a, layer_input(m, l), lane2_input(m, l), N, B_run);
        else block_fwd(m, l, a, layer_input(m, l), N, B_run);
        int k = recur_index(m, l);
        if (k >= 0) {
            block_fwd(m, l, &m->racts[k], a->xout, N, B_run);
            o->lerp_fwd(m->rec_out[k], a->xout, m->racts[k].xout, m->recur_scale[k], N, d);
        }
    }
    if (m->lanes) /* x = m*lane_a + (1-m)*lane_b = lane_b + m*(lane_a - lane_b) */
        o->lerp_fwd(m->lane_out, m->acts[m->L - 1].xout2, m->acts[m->L - 1].xout, m->lane_merge, N * d, 1);
}

double gpt_forward_backward(gpt_model *m, const int32_t *x, const int32_t *y, int B_run, float grad_scale,
                            float *per_token_loss) {
    const pg_ops *o = m->ops;
    PG_CHECK(B_run >= 1 && B_run <= m->B && !m->decoder && (grad_scale == 0.0f || !m->eval_only));
    if (m->wsrc) m->recur_on = m->wsrc->recur_on; /* an evaluator follows its weights' model */
    const int N = B_run * m->T, d = m->d;
    o->to_device(m->idx, x, (size_t)N * sizeof(int32_t));
    o->to_device(m->tgt, y, (size_t)N * sizeof(int32_t));
    /* STE QAT in training forwards: the linear weights are read from their fake-quantised copies
     * (forward and the backward's input gradients); their gradients are those of the copies, which
     * is the straight-through estimator's gradient wrt the masters */
    const int qmode = grad_scale == 0.0f ? 0 : m->qat_mode ? m->qat_mode : (m->late_qat && m->late_active) ? 3 : 0;
    m->qat_now = qmode != 0;
    m->qat_blocks = m->qat_now && !(qmode == 3 && m->late_side_only);
    if (qmode && m->wq_mode != qmode) refresh_wq(m, qmode);

    embed_fwd(m, x, N);
    if (m->ve_dim) ve_fwd(m, N);
    trunk_fwd(m, N, B_run);
    /* head: final norm, tied (or untied) projection, softcap + cross entropy */
    const float *head = m->tied ? m->tok_emb : m->lm_head;
    o->rmsnorm_fwd(m->nf, m->rstdf, trunk_output(m), N, d);
    o->matmul_fwd(m->logits, m->nf, m->tied ? WC(m, head) : WL(m, head), N, d, m->V);
    o->softcap_ce(m->losses, m->logits, m->tgt, N, m->V, m->softcap, grad_scale / (float)N);
    o->to_host(m->losses_host, m->losses, (size_t)N * sizeof(float));
    double sum = 0;
    for (int n = 0; n < N; n++) sum += m->losses_host[n];
    if (per_token_loss) memcpy(per_token_loss, m->losses_host, (size_t)N * sizeof(float));
    if (grad_scale == 0.0f) return sum / N;

    /* ---- backward ---- */
    o->matmul_bwd(m->s_d, GR(m, head), m->logits, m->nf, m->tied ? WC(m, head) : WL(m, head), N, d, m->V, 0);
    o->rmsnorm_bwd(m->dx, m->s_d, m->nf, m->rstdf, N, d, 0);
    o->zero(m->dx0, (size_t)N * d * o->act_bytes);
    if (m->ve_dim) o->zero(m->s_dve, (size_t)N * m->Hk * m->D * o->act_bytes);
    if (m->lanes) /* dx: the attention lane's gradient, dx2: the MLP lane's */
        o->lerp_bwd(m->dx2, m->dx, GR(m, m->lane_merge), m->dx, m->acts[m->L - 1].xout2, m->acts[m->L - 1].xout,
                    m->lane_merge, N * d, 1);
    for (int l = m->L - 1; l >= 0; l--) {
        block_acts *a = &m->acts[l];
        int k = recur_index(m, l);
        if (k >= 0) { /* out = x1 + r*(x2 - x1), x2 = block(x1): dx becomes d x1 */
            o->lerp_bwd(m->s_rec, m->dx, GR(m, m->recur_scale[k]), m->dx, a->xout, m->racts[k].xout,
                        m->recur_scale[k], N, d);
            block_bwd(m, l, &m->racts[k], a->xout, N, B_run, m->dx);
            o->add_inplace(m->dx, m->s_rec, (size_t)N * d);
        }
        int je = m->n_enc - 1 - l; /* skip index fed by encoder block l (if its decoder layer adds it) */
        if (l < m->n_enc && je < m->n_skip && m->acts[m->n_enc + je].xin_skip)
            o->add_inplace(m->dx, m->dskip[je], (size_t)N * d);
        const int j = l - m->n_enc;
        const int has_sw = j >= 0 && j < m->n_skip;
        const float *sw = has_sw ? m->skip_weights + (size_t)j * d : NULL;
        float *gsw = has_sw ? GR(m, m->skip_weights) + (size_t)j * d : NULL;
        if (m->blk[l].lane) {
            lane_block_bwd(m, l, a, layer_input(m, l), lane2_input(m, l), N, B_run, m->dx, m->dx2);
            if (l == m->par_from) o->add_inplace(m->dx, m->dx2, (size_t)N * d); /* both lanes were one stream */
            else if (a->xin_skip2) /* the MLP lane's skip sum: its share of the skip gradients */
                o->resid_bwd(m->dskip[j], gsw, m->dx2, m->acts[m->n_enc - 1 - j].xout, sw, N, d, 0);
        } else
            block_bwd(m, l, a, layer_input(m, l), N, B_run, m->dx);
        if (a->xin_skip) /* x_in = x_prev + skip_w[j] * enc_out: dx passes through */
            o->resid_bwd(m->dskip[j], gsw, m->dx, m->acts[m->n_enc - 1 - j].xout, sw, N, d, a->xin_skip2 != NULL);
        if (!(m->enc_recur && l < m->n_enc)) grads_ready(m, l); /* PR #187's encoder has a pass left */
    }
    if (m->enc_recur) { /* dx is d er_x: back through the norm and the first encoder pass */
        o->rmsnorm_bwd(m->s_d, m->dx, m->er_x, m->rstd_er, N, d, 0);
        o->zero(m->dx, (size_t)N * d * o->act_bytes);
        o->add_inplace(m->dx, m->s_d, (size_t)N * d);
        for (int l = m->n_enc - 1; l >= 0; l--) {
            block_bwd(m, l, &m->eacts[l], l ? m->eacts[l - 1].xout : m->x0, N, B_run, m->dx);
            grads_ready(m, l);
        }
    }
    o->add_inplace(m->dx0, m->dx, (size_t)N * d); /* block 0's (first pass's) input is x0 */
    if (m->ve_dim) ve_bwd(m, N);
    embed_bwd(m, N);
    return sum / N;
}

/* ---- incremental decoding ---- */

void gpt_decode_reset(gpt_model *m, int nb) {
    PG_CHECK(nb >= 1 && nb <= m->B && !m->eval_only);
    m->dec_nb = nb;
    m->dec_pos = 0;
    for (int b = 0; b < nb; b++) m->dec_prev[b] = 0;
}

int gpt_decode_pos(const gpt_model *m) { return m->dec_pos; }

/* The forward above for one token per sequence at position dec_pos (N = B = dec_nb rows):
 * attn_branch_fwd, the bigram buckets and smear read m->decoding for what crosses positions (the
 * key/value caches, the previous tokens, the previous SmearGate inputs); everything else is per token. */
void gpt_decode_step(gpt_model *m, const int32_t *toks, float *logits) {
    const pg_ops *o = m->ops;
    const int nb = m->dec_nb;
    PG_CHECK(nb >= 1 && nb <= m->B && m->dec_pos >= 0 && m->dec_pos < m->T);
    for (int b = 0; b < nb; b++) PG_CHECK(toks[b] >= 0 && toks[b] < m->V);
    m->qat_now = m->qat_blocks = 0;
    m->decoding = 1;
    o->to_device(m->idx, toks, (size_t)nb * sizeof(int32_t));
    embed_fwd(m, toks, nb);
    if (m->ve_dim) ve_fwd(m, nb);
    trunk_fwd(m, nb, nb);
    /* head: final norm, projection; the softcap in fp32 on the host, as softcap_ce applies it */
    const size_t nv = (size_t)nb * m->V;
    o->rmsnorm_fwd(m->nf, m->rstdf, trunk_output(m), nb, m->d);
    o->matmul_fwd(m->logits, m->nf, WC(m, m->tied ? m->tok_emb : m->lm_head), nb, m->d, m->V);
    o->act_to_f32(logits, m->logits, nv);
    for (size_t i = 0; i < nv; i++) logits[i] = m->softcap * tanhf(logits[i] / m->softcap);
    m->decoding = 0;
    for (int b = 0; b < nb; b++) m->dec_prev[b] = toks[b];
    m->dec_pos++;
}

void gpt_to_statedict(const gpt_model *m, statedict *sd) {
    sd_init(sd);
    float *host = xmalloc(m->n_floats * sizeof(float));
    m->ops->to_host(host, m->w, m->n_floats * sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        const float *src = host + p->offset;
        if (p->sd_dtype == DT_BF16) {
            uint16_t *b = xmalloc(p->numel * 2);
            for (size_t k = 0; k < p->numel; k++) b[k] = pg_f32_to_bf16(src[k]);
            sd_add(sd, p->name, DT_BF16, p->ndim, p->shape, b);
            free(b);
        } else
            sd_add(sd, p->name, DT_F32, p->ndim, p->shape, src);
    }
    free(host);
}

void gpt_grads_to_statedict(const gpt_model *m, statedict *sd) {
    sd_init(sd);
    float *host = xmalloc(m->n_floats * sizeof(float));
    m->ops->to_host(host, m->g, m->n_floats * sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        char nm[128];
        snprintf(nm, sizeof(nm), "grad.%s", m->params[i].name);
        sd_add(sd, nm, DT_F32, m->params[i].ndim, m->params[i].shape, host + m->params[i].offset);
    }
    free(host);
}

int gpt_from_statedict(gpt_model *m, const statedict *sd, const char *what, char *err, size_t errlen) {
    float *host = xcalloc(m->n_floats, sizeof(float));
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        const sd_tensor *t = sd_find(sd, p->name);
        if (!t) {
            free(host);
            return pg_err(err, errlen, "%s: missing tensor %s", what, p->name);
        }
        int ok = (size_t)sd_numel(t) == p->numel && (t->ndim == p->ndim || (t->ndim == 1 && p->ndim == 1));
        for (int k = 0; ok && k < p->ndim; k++) ok = t->shape[k] == p->shape[k];
        if (!ok) {
            free(host);
            return pg_err(err, errlen, "%s: tensor %s has shape [%lld%s%lld], model expects [%lld%s%lld]", what,
                          p->name, (long long)t->shape[0], t->ndim > 1 ? "," : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL,
                          (long long)p->shape[0], p->ndim > 1 ? "," : "", p->ndim > 1 ? (long long)p->shape[1] : 0LL);
        }
        if (t->dtype != DT_F32 && t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F64) {
            free(host);
            return pg_err(err, errlen, "%s: tensor %s has non-float dtype %s", what, p->name, pg_dtype_name(t->dtype));
        }
        sd_to_f32(t, host + p->offset);
    }
    for (int i = 0; i < sd->n; i++) {
        int known = 0;
        for (int k = 0; k < m->n_params && !known; k++) known = !strcmp(sd->t[i].name, m->params[k].name);
        if (!known) {
            free(host);
            return pg_err(err, errlen, "%s: unexpected tensor %s for this model configuration", what, sd->t[i].name);
        }
    }
    m->ops->to_device(m->w, host, m->n_floats * sizeof(float));
    free(host);
    gpt_sync_weights(m);
    return 0;
}

void gpt_load_averaged(gpt_model *m, const float *avg, int divisor) {
    float *h = xmalloc(m->n_floats * sizeof(float));
    m->ops->to_host(h, avg, m->n_floats * sizeof(float));
    if (divisor > 1)
        for (size_t i = 0; i < m->n_floats; i++) h[i] = h[i] / (float)divisor;
    for (int i = 0; i < m->n_params; i++) {
        const param_info *p = &m->params[i];
        float *t = h + p->offset;
        if (p->sd_dtype == DT_BF16)
            for (size_t k = 0; k < p->numel; k++) t[k] = pg_round_bf16(t[k]);
        else if (p->sd_dtype == DT_F16)
            for (size_t k = 0; k < p->numel; k++) t[k] = pg_f16_to_f32(pg_f32_to_f16(t[k]));
    }
    m->ops->to_device(m->w, h, m->n_floats * sizeof(float));
    free(h);
    gpt_sync_weights(m);
}
