/* sample.c: `pgolf sample`: text generation from a packed artifact. The model runs on any backend
 * with its own incremental decoding (model.h: gpt_decode_step, one token per sample at a time with
 * key/value caches, --samples S decoded together); the sampler below picks each next token (greedy,
 * temperature, top-k) on the host with its own seeded generator, a stream of the seed per sample.
 *
 * Context: the RoPE tables and the training cover TRAIN_SEQ_LEN positions. When the context is full
 * the decoder slides: it restarts on the last TRAIN_SEQ_LEN/2 tokens (positions from 0 again, a
 * fresh window as in the sliding-window eval) and goes on. */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "backend.h"
#include "cmds.h"
#include "common.h"
#include "export_run.h"
#include "spm.h"
#include "statedict.h"

/* ---- sampling ---- */

static uint64_t splitmix64_(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sample_rng_seed(sample_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64_(&seed);
}

void sample_rng_stream(sample_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t z = stream;
    sample_rng_seed(r, seed ^ splitmix64_(&z)); /* a hash of the stream index: streams do not overlap */
}

static uint64_t rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

double sample_rng_uniform(sample_rng *r) {
    uint64_t *s = r->s;
    const uint64_t res = rotl_(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl_(s[3], 45);
    return (double)(res >> 11) * (1.0 / 9007199254740992.0);
}

static const float *g_sort_logits; /* qsort context (one sampler at a time) */
static int by_logit_desc(const void *a, const void *b) {
    const int i = *(const int *)a, j = *(const int *)b;
    const float li = g_sort_logits[i], lj = g_sort_logits[j];
    if (li != lj) return li > lj ? -1 : 1;
    return i - j;
}

int sample_pick(const float *logits, int V, double temperature, int top_k, double top_p, sample_rng *r) {
    if (temperature <= 0) { /* greedy */
        int best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    int *ids = xmalloc((size_t)V * sizeof(int));
    for (int v = 0; v < V; v++) ids[v] = v;
    int n = V;
    const int cut = top_k > 0 && top_k < V, nucleus = top_p < 1.0;
    if (cut || nucleus) { /* the most likely first */
        g_sort_logits = logits;
        qsort(ids, (size_t)V, sizeof(int), by_logit_desc);
        if (cut) n = top_k;
    }
    double mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = fmax(mx, (double)logits[ids[i]]);
    double *pr = xmalloc((size_t)n * sizeof(double)), sum = 0;
    for (int i = 0; i < n; i++) sum += pr[i] = exp(((double)logits[ids[i]] - mx) / temperature);
    if (nucleus) { /* the shortest prefix holding top_p of the mass (at least one token) */
        double acc = 0;
        int keep = 0;
        while (keep < n && acc < top_p * sum) acc += pr[keep++]; /* top_p > 0: one at least */
        n = keep;
        sum = acc;
    }
    const double u = sample_rng_uniform(r) * sum;
    double acc = 0;
    int pick = ids[n - 1];
    for (int i = 0; i < n; i++) {
        acc += pr[i];
        if (u < acc) {
            pick = ids[i];
            break;
        }
    }
    free(pr);
    free(ids);
    return pick;
}

int sample_logits_finite(const float *logits, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(logits[i])) return 0;
    return 1;
}

/* ---- the command ---- */

static void sample_usage(void) {
    printf("usage: pgolf sample ARTIFACT [--prompt TEXT] [--tokens N] [--samples S] [--temperature T] [--top-k K]\n"
           "                    [--top-p P] [--seed S] [--tokenizer PATH] [--backend cpu|cuda|auto]\n\n"
           "Generates text with the model packed in ARTIFACT (a pgolf artifact). The prompt is encoded with\n"
           "the SentencePiece tokenizer (--tokenizer, else the artifact's TOKENIZER_PATH; its vocabulary must\n"
           "be the model's) and fed after a BOS token, as every document of the training data starts; then N\n"
           "tokens are generated one at a time with a key/value cache and the prompt plus the\n"
           "generated text is printed on stdout. Generation stops early at a BOS or EOS token (a document\n"
           "ends). One summary line goes to stderr.\n\n"
           "  --prompt TEXT       text to continue (default: empty, the start of a document)\n"
           "  --tokens N          tokens to generate (default 128; 0: print the prompt only)\n"
           "  --samples S         continuations of the prompt, decoded together (default 1, at most 256):\n"
           "                      each follows a '=== sample i/S ===' line; sample i draws from its own\n"
           "                      stream of the seed, so sample 1 is the text of --samples 1\n"
           "  --temperature T     softmax temperature of the softcapped logits; 0: greedy (default 1.0)\n"
           "  --top-k K           sample among the K most likely tokens; 0: all (default 0)\n"
           "  --top-p P           then among the fewest most likely tokens whose probabilities sum to at\n"
           "                      least P (nucleus sampling, 0 < P <= 1; default 1: all)\n"
           "  --seed S            seed of the sampler's generator (default 1337): the same seed, prompt and\n"
           "                      settings give the same text\n"
           "  --tokenizer PATH    SentencePiece .model file\n"
           "  --backend B         where the model runs: cpu (fp32), cuda (bf16, the training kernels) or\n"
           "                      auto, a GPU when there is one (default: PGOLF_BACKEND, else auto)\n\n"
           "The context is TRAIN_SEQ_LEN tokens (the positions the model was trained on). When it is full\n"
           "the decoder slides: it restarts on the last TRAIN_SEQ_LEN/2 tokens (positions from 0, as the\n"
           "sliding-window eval does) and goes on. Depth recurrence (RECUR_LAYERS) runs, as in the records'\n"
           "final evaluation. The configuration comes from the artifact, then the environment.\n");
}

static long long parse_int(const char *opt, const char *s) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end) pg_die("sample: %s expects an integer, got '%s'", opt, s);
    return v;
}

static double parse_float(const char *opt, const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) pg_die("sample: %s expects a number, got '%s'", opt, s);
    return v;
}

/* Push each sample's token hist[b*cap + n-1] into its context (all nb histories are n long; sliding
 * all contexts when full) and compute the next tokens' logits (nb, V). */
static void ctx_push(gpt_model *m, const int32_t *hist, long cap, int nb, long n, int32_t *tok, float *logits,
                     long *slides) {
    const int T = m->T;
    if (gpt_decode_pos(m) >= T) {
        const int keep = T / 2 > 0 ? T / 2 : 1; /* the window after the push */
        gpt_decode_reset(m, nb);
        for (long i = n - keep; i < n - 1; i++) {
            for (int b = 0; b < nb; b++) tok[b] = hist[b * cap + i];
            gpt_decode_step(m, tok, logits);
        }
        (*slides)++;
    }
    for (int b = 0; b < nb; b++) tok[b] = hist[b * cap + n - 1];
    gpt_decode_step(m, tok, logits);
}

int cmd_sample(int argc, char **argv) {
    const char *path = NULL, *prompt = "", *tok_path = NULL, *backend = NULL;
    long long n_tokens = 128, top_k = 0, n_samples = 1;
    double temperature = 1.0, top_p = 1.0;
    uint64_t seed = 1337;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            sample_usage();
            return 0;
        }
        const int has_val = i + 1 < argc;
        if (!strcmp(a, "--prompt") || !strcmp(a, "--tokens") || !strcmp(a, "--temperature") || !strcmp(a, "--top-k") ||
            !strcmp(a, "--seed") || !strcmp(a, "--tokenizer") || !strcmp(a, "--backend") || !strcmp(a, "--samples") ||
            !strcmp(a, "--top-p")) {
            if (!has_val) pg_die("sample: %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--prompt")) prompt = v;
            else if (!strcmp(a, "--tokenizer")) tok_path = v;
            else if (!strcmp(a, "--backend")) {
                if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto"))
                    pg_die("sample: --backend must be cpu, cuda or auto, got '%s'", v);
                backend = v;
            }
            else if (!strcmp(a, "--tokens")) {
                n_tokens = parse_int(a, v);
                if (n_tokens < 0 || n_tokens > 100000000) pg_die("sample: --tokens must be in 0..100000000, got %s", v);
            } else if (!strcmp(a, "--samples")) {
                n_samples = parse_int(a, v);
                if (n_samples < 1 || n_samples > 256) pg_die("sample: --samples must be in 1..256, got %s", v);
            } else if (!strcmp(a, "--top-k")) {
                top_k = parse_int(a, v);
                if (top_k < 0) pg_die("sample: --top-k must be >= 0 (0: off), got %s", v);
            } else if (!strcmp(a, "--top-p")) {
                top_p = parse_float(a, v);
                if (!(top_p > 0 && top_p <= 1)) pg_die("sample: --top-p must be in (0, 1] (1: off), got %s", v);
            } else if (!strcmp(a, "--temperature")) {
                temperature = parse_float(a, v);
                if (temperature < 0) pg_die("sample: --temperature must be >= 0 (0: greedy), got %s", v);
            } else {
                long long s = parse_int(a, v);
                if (s < 0) pg_die("sample: --seed must be >= 0, got %s", v);
                seed = (uint64_t)s;
            }
        } else if (a[0] == '-' && a[1]) pg_die("sample: unknown option '%s' (see `pgolf sample --help`)", a);
        else if (path) pg_die("sample: more than one artifact given");
        else path = a;
    }
    if (!path) pg_die("sample: no artifact given (see `pgolf sample --help`)");

    /* the model, as `pgolf eval` rebuilds it: stored configuration (then the environment), tensors */
    char err[PG_ERRLEN];
    artifact art;
    if (artifact_read(path, &art, err, sizeof(err)) != 0) pg_die("%s", err);
    pg_config cfg;
    if (artifact_config(&art, &cfg, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
    artifact_free(&art);
    statedict sd;
    artifact_sizes asz;
    if (export_load_artifact(path, &sd, &asz, err, sizeof(err)) != 0) pg_die("%s", err);
    const int tok_given = tok_path != NULL;
    if (!tok_path) tok_path = cfg.tokenizer_path; /* TOKENIZER_PATH (not stored in artifacts) */
    spm_model *sp = spm_load(tok_path, err, sizeof(err));
    if (!sp) pg_die("%s%s", err, tok_given ? "" : " (name the tokenizer with --tokenizer PATH or TOKENIZER_PATH)");
    const int V = (int)cfg.vocab_size;
    if (spm_vocab_size(sp) != V)
        pg_die("%s: tokenizer vocabulary %d differs from the model's VOCAB_SIZE %d", tok_path, spm_vocab_size(sp), V);
    const int bos = spm_bos_id(sp), eos = spm_eos_id(sp);
    if (bos < 0 || bos >= V) pg_die("%s: the tokenizer has no BOS piece (bos_id %d)", tok_path, bos);

    /* a decoder of one sequence of TRAIN_SEQ_LEN per sample: key/value caches of that length, one row
     * per sample of everything else */
    const int nb = (int)n_samples;
    gpt_model model;
    gpt_build_decoder(&model, &cfg, backend_select(backend ? backend : cfg.backend), nb, (int)cfg.train_seq_len);
    if (gpt_from_statedict(&model, &sd, path, err, sizeof(err)) != 0) pg_die("%s", err);
    sd_free(&sd);
    model.recur_on = model.recur_n > 0; /* the records' final evaluation runs the recurrence */
    gpt_decode_reset(&model, nb);

    int32_t *pids = NULL;
    long np = spm_encode(sp, prompt, strlen(prompt), &pids, err, sizeof(err));
    if (np < 0) pg_die("sample: --prompt: %s", err);
    /* sample b's tokens: hist[b*cap ..], BOS, the prompt, its continuation; once a sample has stopped
     * it is fed its last token again (the others go on), which its text leaves out */
    const long cap = 1 + np + (long)n_tokens;
    int32_t *hist = xmalloc((size_t)nb * cap * sizeof(int32_t)), *tok = xmalloc((size_t)nb * sizeof(int32_t));
    for (int b = 0; b < nb; b++) {
        hist[b * cap] = bos;
        for (long i = 0; i < np; i++) hist[b * cap + 1 + i] = pids[i];
    }
    free(pids);
    long n = 1 + np, slides = 0, *gen = xcalloc((size_t)nb, sizeof(long));
    const char **stop = xmalloc((size_t)nb * sizeof(char *));
    float *logits = xmalloc((size_t)nb * V * sizeof(float));
    sample_rng *rng = xmalloc((size_t)nb * sizeof(sample_rng));
    for (int b = 0; b < nb; b++) {
        sample_rng_stream(&rng[b], seed, (uint64_t)b);
        stop[b] = NULL;
    }
    const double t0 = pg_now();
    for (long i = 1; i <= n; i++) ctx_push(&model, hist, cap, nb, i, tok, logits, &slides);
    const long n_prompt = n;
    int running = nb;
    for (long g = 0; g < n_tokens && running > 0; g++) {
        for (int b = 0; b < nb; b++) {
            int32_t next = hist[b * cap + n - 1]; /* a stopped sample: its last token again */
            if (!stop[b]) {
                const float *l = logits + (size_t)b * V;
                if (!sample_logits_finite(l, (size_t)V)) pg_die("%s: the model produced a non-finite logit", path);
                const int pick = sample_pick(l, V, temperature, top_k > V ? V : (int)top_k, top_p, &rng[b]);
                if (pick == bos || pick == eos) {
                    stop[b] = pick == bos ? "BOS" : "EOS";
                    running--;
                } else {
                    next = pick;
                    gen[b]++;
                }
            }
            hist[b * cap + n] = next;
        }
        n++;
        if (g + 1 < n_tokens && running > 0) ctx_push(&model, hist, cap, nb, n, tok, logits, &slides);
    }
    const double dt = pg_now() - t0;
    long total = 0;
    char stops[8 * 257] = "";
    for (int b = 0; b < nb; b++) {
        size_t tl = 0;
        char *text = spm_decode(sp, hist + b * cap + 1, (size_t)(n_prompt - 1 + gen[b]), &tl, err, sizeof(err));
        if (!text) pg_die("sample: %s", err);
        if (nb > 1) printf("=== sample %d/%d ===\n", b + 1, nb);
        fwrite(text, 1, tl, stdout);
        fputc('\n', stdout);
        free(text);
        total += gen[b];
        const size_t sl = strlen(stops);
        snprintf(stops + sl, sizeof(stops) - sl, "%s%s", b ? " " : "", stop[b] ? stop[b] : "length");
    }
    fflush(stdout);
    char what[32] = "";
    if (nb > 1) snprintf(what, sizeof(what), "%d samples, ", nb);
    const double fed = (double)nb * (n_prompt - 1) + (double)total; /* tokens through the model */
    fprintf(stderr,
            "sample: backend %s, prompt %ld tokens (with BOS), %sgenerated %ld tokens (stop: %s), %ld context slides, "
            "%.1f tokens/s, model memory %.1f MiB\n",
            model.ops->name, n_prompt, what, total, stops, slides, fed / (dt > 1e-9 ? dt : 1e-9),
            (double)model.dev_bytes / (1024.0 * 1024.0));
    free(logits);
    free(hist);
    free(tok);
    free(gen);
    free(stop);
    free(rng);
    gpt_free(&model);
    spm_free(sp);
    config_free(&cfg);
    return 0;
}
