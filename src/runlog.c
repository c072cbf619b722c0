/* runlog.c: the training-log reader of `pgolf plot`, `compare` and `submit` (see runlog.h). One pass
 * over the lines; each line is split into whitespace-separated tokens, with PR #1392's "key: value"
 * joined into "key:value", and recognised by its first token. */
#include "runlog.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MAX_TOK 64

typedef struct {
    const char *path;
    int line;
    char *err;
    size_t errlen;
} ctx;

static int fail(ctx *c, const char *msg, const char *what) {
    if (what) return pg_err(c->err, c->errlen, "%s:%d: %s '%.60s'", c->path, c->line, msg, what);
    return pg_err(c->err, c->errlen, "%s:%d: %s", c->path, c->line, msg);
}

/* a whole token as a finite-or-not double (strtod: nan and inf accepted) */
static int parse_double(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE) return -1;
    *out = v;
    return 0;
}

static int parse_ll(const char *s, long long *out) {
    if (!*s || !(isdigit((unsigned char)*s) || *s == '-')) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno == ERANGE) return -1;
    *out = v;
    return 0;
}

/* "23411ms", "12.5s", "0.9m" (minutes, PR #1392), a bare number = ms */
static int parse_time_ms(const char *s, double *out) {
    char buf[64];
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(buf)) return -1;
    memcpy(buf, s, n + 1);
    double scale = 1;
    if (n > 2 && !strcmp(buf + n - 2, "ms")) buf[n - 2] = 0;
    else if (n > 1 && buf[n - 1] == 's') buf[n - 1] = 0, scale = 1000;
    else if (n > 1 && buf[n - 1] == 'm') buf[n - 1] = 0, scale = 60000;
    double v;
    if (parse_double(buf, &v) != 0 || !(v >= 0)) return -1;
    *out = v * scale;
    return 0;
}

/* "N/M" with N, M >= 0 */
static int parse_step(const char *s, long *n, long *m) {
    const char *slash = strchr(s, '/');
    if (!slash || slash == s || !slash[1]) return -1;
    char a[32];
    size_t la = (size_t)(slash - s);
    if (la >= sizeof(a)) return -1;
    memcpy(a, s, la);
    a[la] = 0;
    for (const char *p = a; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    for (const char *p = slash + 1; *p; p++)
        if (!isdigit((unsigned char)*p)) return -1;
    long long x, y;
    if (parse_ll(a, &x) != 0 || parse_ll(slash + 1, &y) != 0 || x > 1000000000000LL || y > 1000000000000LL) return -1;
    *n = (long)x;
    *m = (long)y;
    return 0;
}

static int is_step_token(const char *s) {
    if (!isdigit((unsigned char)*s)) return 0;
    while (isdigit((unsigned char)*s)) s++;
    if (*s != '/') return 0;
    s++;
    if (!isdigit((unsigned char)*s)) return 0;
    while (isdigit((unsigned char)*s)) s++;
    return *s == 0;
}

/* split into tokens; "key:" followed by a token becomes "key:value" (in place, by shifting) */
static int tokenize(char *s, char **tok) {
    int n = 0;
    char *p = s;
    while (*p && n < MAX_TOK) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (!*p) break;
        tok[n++] = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        if (*p) *p++ = 0;
    }
    int m = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(tok[i]);
        if (l > 1 && tok[i][l - 1] == ':' && i + 1 < n && !strchr(tok[i + 1], ':')) {
            /* tok[i+1] follows tok[i] in the same buffer: move it down to join */
            memmove(tok[i] + l, tok[i + 1], strlen(tok[i + 1]) + 1);
            tok[m++] = tok[i];
            i++;
        } else tok[m++] = tok[i];
    }
    return m;
}

/* value of key:VALUE among tokens (the last occurrence), or NULL */
static const char *tok_get(char **tok, int n, const char *key) {
    size_t kl = strlen(key);
    const char *v = NULL;
    for (int i = 0; i < n; i++)
        if (!strncmp(tok[i], key, kl) && tok[i][kl] == ':') v = tok[i] + kl + 1;
    return v;
}

#define GROW(arr, n, cap)                                                                          \
    do {                                                                                           \
        if ((n) == (cap)) {                                                                        \
            (cap) = (cap) ? 2 * (cap) : 64;                                                        \
            (arr) = xrealloc((arr), (cap) * sizeof(*(arr)));                                       \
        }                                                                                          \
    } while (0)

typedef struct {
    size_t cap_train, cap_val, cap_final, cap_cfg;
    long last_train, last_val;
    int in_hparams;
} pstate;

static void cfg_set(runlog *r, pstate *ps, const char *key, const char *value, const char *source, int overwrite) {
    for (size_t i = 0; i < r->n_cfg; i++)
        if (!strcmp(r->cfg[i].key, key)) {
            if (!overwrite) return;
            free(r->cfg[i].value);
            free(r->cfg[i].source);
            r->cfg[i].value = xstrdup(value);
            r->cfg[i].source = xstrdup(source);
            return;
        }
    GROW(r->cfg, r->n_cfg, ps->cap_cfg);
    r->cfg[r->n_cfg].key = xstrdup(key);
    r->cfg[r->n_cfg].value = xstrdup(value);
    r->cfg[r->n_cfg].source = xstrdup(source);
    r->n_cfg++;
}

static void clear_finals(runlog *r) {
    for (size_t i = 0; i < r->n_final; i++) free(r->finals[i].name);
    r->n_final = 0;
    r->total_bytes = r->code_bytes = -1;
    r->stopped_early = 0;
}

/* A step going back means a later run appended to the same log: keep the points before it. */
static void restart_at(runlog *r, pstate *ps, long s, int is_val) {
    size_t k = 0;
    for (size_t i = 0; i < r->n_train; i++)
        if (is_val ? r->train[i].step <= s : r->train[i].step < s) r->train[k++] = r->train[i];
    r->n_train = k;
    k = 0;
    for (size_t i = 0; i < r->n_val; i++)
        if (r->val[i].step < s) r->val[k++] = r->val[i];
    r->n_val = k;
    ps->last_train = r->n_train ? r->train[r->n_train - 1].step : -1;
    ps->last_val = r->n_val ? r->val[r->n_val - 1].step : -1;
    clear_finals(r);
}

static int do_step_line(runlog *r, pstate *ps, ctx *c, char **tok, int nt, int bare) {
    long s, m;
    const char *st = bare ? tok[0] : tok[0] + 5;
    if (parse_step(st, &s, &m) != 0) return fail(c, "bad step field", tok[0]);
    const char *tl = tok_get(tok, nt, "train_loss");
    if (!tl) tl = tok_get(tok, nt, "loss");
    const char *vl = tok_get(tok, nt, "val_loss"), *vb = tok_get(tok, nt, "val_bpb");
    const char *tt = tok_get(tok, nt, "train_time");
    if (!tt) tt = tok_get(tok, nt, "t");
    const char *sa = tok_get(tok, nt, "step_avg");
    if (!sa) sa = tok_get(tok, nt, "avg");
    if (!tl && !vl && !vb) {
        if (bare) return 0; /* "N/M something": not a progress line we know */
        for (int i = 1; i < nt; i++) /* "step:N/M" alone or cut before its fields: truncated */
            if (strchr(tok[i], ':')) return 0; /* some other per-step line (fitness:, churn:) */
        return fail(c, "step line without train_loss or val_loss (truncated?)", NULL);
    }
    double time_ms = NAN, avg = NAN;
    if (tt && parse_time_ms(tt, &time_ms) != 0) return fail(c, "bad train_time", tt);
    if (sa && parse_time_ms(sa, &avg) != 0) return fail(c, "bad step_avg", sa);
    if (tl) {
        double loss;
        if (parse_double(tl, &loss) != 0) return fail(c, "bad train_loss", tl);
        if (!tt) return fail(c, "train step line without train_time (truncated?)", NULL);
        if (s <= ps->last_train || s < ps->last_val) restart_at(r, ps, s, 0);
        GROW(r->train, r->n_train, ps->cap_train);
        r->train[r->n_train++] = (rl_train_pt){.step = s, .time_ms = time_ms, .loss = loss};
        ps->last_train = s;
    } else {
        double vloss, vbpb;
        if (!vl) return fail(c, "val_bpb without val_loss", NULL);
        if (parse_double(vl, &vloss) != 0) return fail(c, "bad val_loss", vl);
        if (!vb) return fail(c, "val_loss without val_bpb (truncated?)", NULL);
        if (parse_double(vb, &vbpb) != 0) return fail(c, "bad val_bpb", vb);
        if (s <= ps->last_val || s < ps->last_train) restart_at(r, ps, s, 1);
        GROW(r->val, r->n_val, ps->cap_val);
        r->val[r->n_val++] = (rl_val_pt){.step = s, .time_ms = time_ms, .loss = vloss, .bpb = vbpb};
        ps->last_val = s;
    }
    r->last_step = s;
    r->total_steps = m;
    if (!isnan(avg)) r->step_avg_ms = avg;
    if (!isnan(time_ms)) r->train_time_ms = time_ms;
    return 0;
}

static int starts(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }
static int ends(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* digits after the decimal point of a number token */
static int decimals(const char *s) {
    const char *d = strchr(s, '.');
    if (!d) return 0;
    int n = 0;
    for (d++; isdigit((unsigned char)*d); d++) n++;
    return n;
}

static int do_final_line(runlog *r, pstate *ps, ctx *c, char **tok, int nt, int last_incomplete) {
    const char *name = tok[0];
    int must = starts(name, "final_") &&
               (ends(name, "_exact") || ends(name, "_roundtrip") || strstr(name, "sliding") != NULL);
    const char *vl = tok_get(tok, nt, "val_loss"), *vb = tok_get(tok, nt, "val_bpb");
    if (!vl && !vb && !must) return 0;
    double loss, bpb;
    if (!vl) return fail(c, "final score line without val_loss (truncated?)", NULL);
    if (parse_double(vl, &loss) != 0) return fail(c, "bad val_loss", vl);
    if (!vb) return fail(c, "final score line without val_bpb (truncated?)", NULL);
    if (parse_double(vb, &bpb) != 0) return fail(c, "bad val_bpb", vb);
    /* the _exact lines print 8 decimals: fewer on an unterminated last line means it was cut */
    if (last_incomplete && ends(name, "_exact") && (decimals(vl) < 8 || decimals(vb) < 8))
        return fail(c, "last line cut short (truncated log)", NULL);
    GROW(r->finals, r->n_final, ps->cap_final);
    r->finals[r->n_final++] = (rl_final){.name = xstrdup(name), .val_loss = loss, .val_bpb = bpb, .line = c->line};
    return 0;
}

/* "Total submission size[ LABEL]: N bytes", "Code size[ (compressed)]: N bytes" */
static int do_size_line(runlog *r, ctx *c, const char *line, int total) {
    const char *colon = strchr(line, ':');
    if (!colon) return fail(c, "size line without ':' (truncated?)", NULL);
    const char *head_end = colon;
    const char *prefix_end = line + (total ? strlen("Total submission size") : strlen("Code size"));
    int labelled = head_end > prefix_end;
    if (!total && labelled && !strstr(prefix_end, "(compressed)")) return 0; /* "(uncompressed)" */
    const char *p = colon + 1;
    while (*p == ' ') p++;
    char *end;
    errno = 0;
    long long v = strtoll(p, &end, 10);
    if (end == p || errno || v < 0) return fail(c, "bad byte count", p);
    while (*end == ' ') end++;
    if (strncmp(end, "bytes", 5)) return fail(c, "byte count without 'bytes' (truncated?)", NULL);
    if (total) {
        if (labelled || r->total_bytes < 0) r->total_bytes = v;
    } else r->code_bytes = v;
    return 0;
}

static void upper(char *s) {
    for (; *s; s++) *s = (char)toupper((unsigned char)*s);
}

static int do_line(runlog *r, pstate *ps, ctx *c, char *line, int last_incomplete) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[--len] = 0;
    /* PR #1392's resolved hyperparameters: "Hyperparameters:" then "  key: value" lines */
    if (ps->in_hparams) {
        if (line[0] == ' ' && line[1] == ' ' && line[2] != ' ') {
            char *k = line + 2, *colon = strchr(k, ':');
            if (colon && colon[1] == ' ') {
                *colon = 0;
                char key[256];
                snprintf(key, sizeof(key), "%s", k);
                upper(key);
                cfg_set(r, ps, key, colon + 2, "", 1);
            }
            return 0;
        }
        ps->in_hparams = 0;
    }
    if (!strcmp(line, "Hyperparameters:")) {
        ps->in_hparams = 1;
        return 0;
    }
    /* pgolf's resolved configuration: "config KEY=VALUE (source)" */
    if (starts(line, "config ")) {
        char *k = line + 7, *eq = strchr(k, '=');
        if (!eq || eq == k) return fail(c, "bad config line (expected 'config KEY=VALUE (source)')", NULL);
        *eq = 0;
        char *v = eq + 1, *src = "";
        char *paren = strrchr(v, '(');
        if (!(len && line[len - 1] == ')') || !paren || paren == v || paren[-1] != ' ')
            return fail(c, "config line without its '(source)' (truncated?)", NULL);
        paren[-1] = 0;
        line[len - 1] = 0;
        src = paren + 1;
        for (char *p = k; *p; p++)
            if (!(isupper((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
                return fail(c, "bad config key", k);
        cfg_set(r, ps, k, v, src, 1);
        r->pgolf = 1;
        return 0;
    }
    if (starts(line, "pgolf train:")) {
        r->pgolf = 1;
        return 0;
    }
    if (starts(line, "Total submission size")) return do_size_line(r, c, line, 1);
    if (starts(line, "Code size")) return do_size_line(r, c, line, 0);

    char *tok[MAX_TOK];
    /* an epoch-seconds prefix ("1776142348.135 step:...", some record logs) */
    char *body = line;
    if (isdigit((unsigned char)body[0])) {
        char *p = body;
        while (isdigit((unsigned char)*p)) p++;
        if (p - body >= 9 && *p == '.') {
            p++;
            while (isdigit((unsigned char)*p)) p++;
            if (*p == ' ') body = p + 1;
        }
    }
    if (isspace((unsigned char)body[0])) return 0; /* indented: source code, tables, TTT details */
    int nt = tokenize(body, tok);
    if (nt == 0) return 0;
    const char *t0 = tok[0];
    if (starts(t0, "step:") && isdigit((unsigned char)t0[5])) {
        if (!strchr(t0 + 5, '/')) {
            /* "step:N checkpoint saved", "step:N churn:": other per-step lines; a cut "step:12" is not */
            if (nt == 1 && last_incomplete) return fail(c, "last line cut short (truncated log)", NULL);
            return 0;
        }
        return do_step_line(r, ps, c, tok, nt, 0);
    }
    if (is_step_token(t0)) return do_step_line(r, ps, c, tok, nt, 1);
    if (!strchr(t0, ':') && (starts(t0, "final_") || starts(t0, "quantized") || starts(t0, "legal_ttt")))
        return do_final_line(r, ps, c, tok, nt, last_incomplete);
    if (starts(t0, "stopping_early:")) {
        /* its train_time is exact where PR #1392's step lines give minutes */
        const char *tt = tok_get(tok, nt, "train_time");
        double ms;
        if (tt && parse_time_ms(tt, &ms) != 0) return fail(c, "bad train_time", tt);
        if (tt) r->train_time_ms = ms;
        r->stopped_early = 1;
        return 0;
    }
    if (starts(t0, "model_params:")) {
        long long v;
        if (parse_ll(t0 + 13, &v) != 0 || v < 0) return fail(c, "bad model_params", t0 + 13);
        r->model_params = v;
        return 0;
    }
    /* train_gpt.py's header lines: keep their key:value pairs under the logged names */
    if (starts(t0, "seed:") || starts(t0, "train_batch_tokens:") || starts(t0, "tie_embeddings:") ||
        starts(t0, "attention_mode:") || starts(t0, "world_size:")) {
        for (int i = 0; i < nt; i++) {
            char *colon = strchr(tok[i], ':');
            if (!colon || colon == tok[i] || !colon[1]) continue;
            *colon = 0;
            if (!strcmp(tok[i], "seed")) {
                long long v;
                if (parse_ll(colon + 1, &v) != 0) return fail(c, "bad seed", colon + 1);
            }
            /* train_gpt.py logs the embedding's learning rate in use (TIED_EMBED_LR when tied) as
             * embed_lr: keep it apart from the EMBED_LR key */
            cfg_set(r, ps, !strcmp(tok[i], "embed_lr") ? "token_lr" : tok[i], colon + 1, "", 1);
        }
    }
    return 0;
}

int runlog_parse(const char *path, const char *buf, size_t len, runlog *r, char *err, size_t errlen) {
    memset(r, 0, sizeof(*r));
    r->path = xstrdup(path);
    r->last_step = r->total_steps = -1;
    r->step_avg_ms = r->train_time_ms = NAN;
    r->model_params = r->total_bytes = r->code_bytes = -1;
    ctx c = {.path = path, .line = 0, .err = err, .errlen = errlen};
    if (len == 0) {
        runlog_free(r);
        return pg_err(err, errlen, "%s: empty file, not a train log", path);
    }
    const char *nul = memchr(buf, 0, len);
    if (nul) {
        runlog_free(r);
        return pg_err(err, errlen, "%s: binary data (a NUL byte at offset %zu), not a text log", path, (size_t)(nul - buf));
    }
    pstate ps = {.last_train = -1, .last_val = -1};
    char *line = NULL;
    size_t cap = 0;
    size_t pos = 0;
    int rc = 0;
    while (pos < len && rc == 0) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (buf + pos)) : len - pos;
        if (l + 1 > cap) {
            cap = l + 1;
            line = xrealloc(line, cap);
        }
        memcpy(line, buf + pos, l);
        line[l] = 0;
        c.line++;
        rc = do_line(r, &ps, &c, line, nl == NULL);
        pos += l + (nl ? 1 : 0);
    }
    free(line);
    if (rc == 0 && r->n_train == 0 && r->n_val == 0)
        rc = pg_err(err, errlen, "%s: no training progress lines ('step:N/M train_loss:...' or 'step:N/M val_loss:...'): "
                    "not a train log, or cut before the first step", path);
    if (rc == 0) {
        const char *sv = runlog_cfg(r, "SEED");
        if (!sv) sv = runlog_cfg(r, "seed");
        long long v;
        if (sv && parse_ll(sv, &v) == 0) r->seed = v, r->have_seed = 1;
    }
    if (rc != 0) runlog_free(r);
    return rc;
}

int runlog_read(const char *path, runlog *r, char *err, size_t errlen) {
    uint8_t *data;
    size_t len;
    memset(r, 0, sizeof(*r));
    if (pg_read_file(path, &data, &len, err, errlen) != 0) return -1;
    int rc = runlog_parse(path, (const char *)data, len, r, err, errlen);
    free(data);
    return rc;
}

void runlog_free(runlog *r) {
    free(r->path);
    free(r->train);
    free(r->val);
    for (size_t i = 0; i < r->n_final; i++) free(r->finals[i].name);
    free(r->finals);
    for (size_t i = 0; i < r->n_cfg; i++) {
        free(r->cfg[i].key);
        free(r->cfg[i].value);
        free(r->cfg[i].source);
    }
    free(r->cfg);
    memset(r, 0, sizeof(*r));
}

/* the automatic choice, in order: the last final_*sliding*_exact line, final_*sliding* (the logs of
 * PR #1392's era print the sliding score with 8 decimals but no _exact line), final_*roundtrip*_exact,
 * final_*roundtrip*; else the last final score line */
const rl_final *runlog_final(const runlog *r, const char *metric) {
    const rl_final *best = NULL;
    if (metric && strcmp(metric, "auto")) {
        for (size_t i = 0; i < r->n_final; i++)
            if (!strcmp(r->finals[i].name, metric)) best = &r->finals[i];
        return best;
    }
    static const struct {
        const char *part;
        int exact;
    } order[] = {{"sliding", 1}, {"sliding", 0}, {"roundtrip", 1}, {"roundtrip", 0}};
    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        for (size_t i = 0; i < r->n_final; i++) {
            const char *n = r->finals[i].name;
            if (starts(n, "final_") && strstr(n, order[k].part) && (!order[k].exact || ends(n, "_exact")))
                best = &r->finals[i];
        }
        if (best) return best;
    }
    return r->n_final ? &r->finals[r->n_final - 1] : NULL;
}

const char *runlog_cfg(const runlog *r, const char *key) {
    for (size_t i = 0; i < r->n_cfg; i++)
        if (!strcmp(r->cfg[i].key, key)) return r->cfg[i].value;
    return NULL;
}

char *runlog_label(const char *path) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    char *s = xstrdup(*b ? b : path);
    size_t n = strlen(s);
    if (n > 4 && (!strcmp(s + n - 4, ".txt") || !strcmp(s + n - 4, ".log"))) s[n - 4] = 0;
    return s;
}
