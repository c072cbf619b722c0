/* export_cmds.c: the artifact commands.
 *   pgolf eval FILE      score an artifact (or a safetensors state dict) on the validation shards
 *   pgolf export IN OUT  safetensors -> artifact (QUANT_SCHEME, EXPORT_CODEC), or artifact ->
 *                        safetensors of the dequantised weights (PyTorch state-dict names)
 *   pgolf info FILE      header, tensors, formats and the byte accounting against 16,000,000
 * The model configuration comes from the file (an artifact's stored config, or the pgolf_config
 * metadata of a safetensors written by pgolf), then the environment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "backend.h"
#include "cmds.h"
#include "common.h"
#include "data.h"
#include "dist.h"
#include "eval.h"
#include "export_run.h"
#include "json.h"
#include "model.h"
#include "quant.h"
#include "statedict.h"

/* The pgolf_config metadata string of a safetensors file (malloc'd), or NULL if absent. */
static char *st_config_meta(const char *path) {
    uint8_t *buf;
    size_t len;
    char err[PG_ERRLEN];
    if (pg_read_file(path, &buf, &len, err, sizeof(err)) != 0) return NULL;
    char *out = NULL;
    if (len >= 8) {
        uint64_t hl = pg_rd_u64(buf);
        if (hl <= len - 8) {
            json_value *j = json_parse((const char *)buf + 8, (size_t)hl, path, err, sizeof(err));
            const json_value *m = j ? json_get(j, "__metadata__") : NULL;
            const json_value *c = m ? json_get(m, "pgolf_config") : NULL;
            if (c && c->type == JSON_STRING) out = xstrdup(c->str);
            json_free(j);
        }
    }
    free(buf);
    return out;
}

/* A weights file of either kind -> state dict (original dtypes) + configuration. */
typedef struct {
    int is_artifact;
    char label_short[32];
    char scheme[32], codec[32];
    artifact_sizes sz;
} loaded_info;

static void load_weights(const char *path, statedict *sd, pg_config *cfg, loaded_info *li) {
    char err[PG_ERRLEN];
    memset(li, 0, sizeof(*li));
    if (artifact_is_artifact(path)) {
        artifact a;
        if (artifact_read(path, &a, err, sizeof(err)) != 0) pg_die("%s", err);
        li->is_artifact = 1;
        snprintf(li->scheme, sizeof(li->scheme), "%s", a.quant_scheme);
        codec_label(&a.codec, li->codec, sizeof(li->codec));
        quant_scheme qs;
        char ll[48];
        if (quant_scheme_parse(a.quant_scheme, &qs, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
        quant_labels(qs, li->codec, ll, sizeof(ll), li->label_short, sizeof(li->label_short));
        if (artifact_config(&a, cfg, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
        artifact_free(&a);
        if (export_load_artifact(path, sd, &li->sz, err, sizeof(err)) != 0) pg_die("%s", err);
        return;
    }
    /* PR #1311 / #1392 state dicts hold weight banks: read them as the per-layer matrices */
    if (safetensors_read_records(path, sd, err, sizeof(err)) != 0) pg_die("%s", err);
    char *cj = st_config_meta(path);
    if (artifact_config_from_json(cj, cfg, err, sizeof(err)) != 0) pg_die("%s: %s", path, err);
    free(cj);
    snprintf(li->label_short, sizeof(li->label_short), "raw");
}

static void eval_usage(void) {
    printf("usage: pgolf eval [--artifact] FILE\n\n"
           "Scores FILE (a pgolf artifact, or a safetensors state dict such as final_model.safetensors) on\n"
           "the validation shards DATA_PATH/fineweb_val_*.bin with the byte tables of TOKENIZER_PATH:\n"
           "the standard non-overlapping val_loss/val_bpb, then the sliding window when EVAL_STRIDE > 0.\n"
           "The model is rebuilt from the configuration stored in FILE; environment variables override it\n"
           "(a shape they change is reported as a tensor mismatch). Prints, as `pgolf train` does:\n"
           "  final_<label>_roundtrip val_loss:... val_bpb:... eval_time:...ms\n"
           "  final_<label>_roundtrip_exact val_loss:... val_bpb:...\n"
           "with <label> the artifact's (int8_zlib, int6, ...) or `raw` for a safetensors file, and ends\n"
           "with train's `peak memory allocated: ... MiB reserved: ... MiB` (the model is a forwards-only\n"
           "build: one set of activations shared by the layers, no gradients).\n");
}

int cmd_eval(int argc, char **argv) {
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            eval_usage();
            return 0;
        }
        if (!strcmp(argv[i], "--artifact")) {
            if (i + 1 >= argc) pg_die("eval: --artifact needs a file");
            if (path) pg_die("eval: more than one file given");
            path = argv[++i];
        } else if (argv[i][0] == '-') pg_die("eval: unknown option '%s' (see `pgolf eval --help`)", argv[i]);
        else {
            if (path) pg_die("eval: more than one file given");
            path = argv[i];
        }
    }
    if (!path) pg_die("eval: no file given (see `pgolf eval --help`)");
    char err[PG_ERRLEN];
    pg_config cfg;
    statedict sd;
    loaded_info li;
    dist_init(); /* under mpirun the evaluation is split across the ranks (dist.h) */
    load_weights(path, &sd, &cfg, &li);
    const int rank = (int)cfg.rank, world = (int)cfg.world_size, accum = config_grad_accum(&cfg), T = (int)cfg.train_seq_len;
    if (rank != 0 && !freopen("/dev/null", "w", stdout)) pg_die("cannot silence rank %d's output", rank); /* rank 0 reports */
    const int B_val = (int)(cfg.val_batch_size / (world * accum) / T);
    bpb_luts luts;
    if (bpb_luts_load(&luts, cfg.tokenizer_path, (int)cfg.vocab_size, err, sizeof(err)) != 0) pg_die("%s", err);
    char val_pat[4096];
    snprintf(val_pat, sizeof(val_pat), "%s/fineweb_val_*.bin", cfg.data_path);
    uint16_t *val = NULL;
    size_t val_total = 0, usable = 0;
    if (val_tokens_load(val_pat, (int)cfg.vocab_size, T, &val, &val_total, &usable, err, sizeof(err)) != 0) pg_die("%s", err);
    const pg_ops *ops = backend_select(cfg.backend);
    gpt_model model;
    gpt_build_eval(&model, &cfg, ops, B_val, T, NULL); /* scoring only: no gradients, one set of activations */
    if (gpt_from_statedict(&model, &sd, path, err, sizeof(err)) != 0) pg_die("%s", err);
    model.recur_on = model.recur_n > 0; /* the records evaluate with depth recurrence on (PR #1392) */
    sd_free(&sd);
    if (li.is_artifact)
        printf("eval:artifact %s quant_scheme:%s codec:%s model_bytes:%zu code_bytes:%zu total_bytes:%zu cap:%d\n", path,
               li.scheme, li.codec, li.sz.model_bytes, li.sz.code_bytes, li.sz.file_bytes, PGOLF_SIZE_CAP);
    else
        printf("eval:safetensors %s\n", path);
    printf("val_loader:shards pattern=%s tokens:%zu\n", val_pat, usable);
    printf("model_params:%zu\n", gpt_param_count(&model));
    eval_result er;
    double t0 = pg_now();
    eval_val(&model, val, usable, T, B_val, rank, world, &luts, &er, NULL);
    printf("final_%s_roundtrip val_loss:%.4f val_bpb:%.4f eval_time:%.0fms\n", li.label_short, er.val_loss, er.val_bpb,
           1000.0 * (pg_now() - t0));
    printf("final_%s_roundtrip_exact val_loss:%.8f val_bpb:%.8f\n", li.label_short, er.val_loss, er.val_bpb);
    if (cfg.eval_stride > 0) {
        const sw_style st = (sw_style)sw_style_parse(cfg.sw_style);
        const int s = (int)cfg.eval_stride;
        double ts = pg_now();
        eval_sliding(&model, val, usable, s, (int)cfg.sw_eval_batch, st, cfg.eval_temperature, rank, world, &luts, &er);
        double ms = 1000.0 * (pg_now() - ts);
        if (st == SW_PR65) {
            printf("final_sliding_window_eval stride:%d val_loss:%.4f val_bpb:%.4f eval_time:%.0fms\n", s, er.val_loss, er.val_bpb, ms);
            printf("final_sliding_window_eval_exact stride:%d val_loss:%.8f val_bpb:%.8f\n", s, er.val_loss, er.val_bpb);
        } else {
            printf("final_%s_sliding_window val_loss:%.4f val_bpb:%.4f stride:%d eval_time:%.0fms\n", li.label_short,
                   er.val_loss, er.val_bpb, s, ms);
            printf("final_%s_sliding_window_exact val_loss:%.8f val_bpb:%.8f\n", li.label_short, er.val_loss, er.val_bpb);
        }
    }
    printf("peak memory allocated: %zu MiB reserved: %zu MiB\n", ops->peak_bytes() >> 20, pg_peak_rss_mib());
    gpt_free(&model);
    bpb_luts_free(&luts);
    free(val);
    config_free(&cfg);
    dist_finalize();
    return 0;
}

static void export_usage(void) {
    printf("usage: pgolf export IN OUT\n\n"
           "  IN a safetensors state dict (e.g. final_model.safetensors): quantise it with QUANT_SCHEME\n"
           "     (int8_baseline, int6_pr65, int6_pr315, int6_gptq_lite, int6_gptq, int6_pr187), compress\n"
           "     with EXPORT_CODEC (zlib-9, zstd-22, lzma-6, lzma-9, lzma-9e, brotli-11) and write the\n"
           "     pgolf artifact OUT; prints the byte accounting. Weight banks (qo_bank, ...) are read as\n"
           "     the per-layer matrices.\n"
           "  IN a pgolf artifact: write OUT as a safetensors file of the dequantised weights with the\n"
           "     PyTorch state-dict names and dtypes of the records (loadable by the reference model);\n"
           "     PGOLF_EXPORT_NAMES=banked writes PR #1311 / #1392's weight banks instead, =pr187 PR #187's\n"
           "     smear_gate.gate for smeargate.gate.\n"
           "The model configuration (checked against the tensors) comes from IN, then the environment.\n"
           "OUT is written atomically: on any error nothing is left at OUT.\n");
}

int cmd_export(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            export_usage();
            return 0;
        }
        if (argv[i][0] == '-') pg_die("export: unknown option '%s' (see `pgolf export --help`)", argv[i]);
        if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else pg_die("export: too many arguments (see `pgolf export --help`)");
    }
    if (!in || !out) pg_die("export: expected IN and OUT (see `pgolf export --help`)");
    char err[PG_ERRLEN];
    pg_config cfg;
    statedict sd;
    loaded_info li;
    load_weights(in, &sd, &cfg, &li);
    /* the tensors must fit the configured model */
    gpt_model model;
    gpt_build(&model, &cfg, backend_select("cpu"), 1, 2);
    if (gpt_from_statedict(&model, &sd, in, err, sizeof(err)) != 0) pg_die("%s", err);
    sd_free(&sd);
    gpt_to_statedict(&model, &sd);
    gpt_free(&model);
    if (li.is_artifact) {
        char *cj = artifact_config_json(&cfg);
        const char *meta[] = {"format", "pt", "pgolf_config", cj};
        /* the dequantised tensors in the model's state-dict dtypes; PGOLF_EXPORT_NAMES=banked: the
         * block matrices as PR #1311 / #1392's weight banks */
        const int banked = !strcmp(cfg.export_names, "banked");
        if (banked) {
            statedict b;
            if (sd_bank(&sd, (int)cfg.num_layers, &b, err, sizeof(err)) != 0) pg_die("%s: %s", in, err);
            sd_free(&sd);
            sd = b;
        }
        if (!strcmp(cfg.export_names, "pr187")) sd_pr187_names(&sd);
        if (safetensors_write(out, &sd, meta, 2, err, sizeof(err)) != 0) pg_die("%s", err);
        free(cj);
        printf("export: %s (%s, %s) -> %s: %d tensors, dequantised%s\n", in, li.scheme, li.codec, out, sd.n,
               banked ? ", banked names" : "");
    } else {
        export_sizes sz;
        if (export_pack(&cfg, &sd, out, &sz, err, sizeof(err)) != 0) pg_die("%s", err);
        printf("Serialized model %s: %zu bytes (payload:%zu raw_torch:%zu payload_ratio:%.2fx)\n", sz.log_label, sz.model_bytes,
               sz.payload_bytes, sz.raw_bytes, (double)sz.baseline_tensor_bytes / (double)(sz.payload_bytes ? sz.payload_bytes : 1));
        printf("Code size: %zu bytes\n", sz.code_bytes);
        printf("Total submission size %s: %zu bytes\n", sz.log_label, sz.file_bytes);
        printf("export: %s -> %s (%s, %s)%s\n", in, out, cfg.quant_scheme, cfg.export_codec,
               sz.file_bytes > PGOLF_SIZE_CAP ? " OVER the 16,000,000-byte cap" : "");
    }
    sd_free(&sd);
    config_free(&cfg);
    return 0;
}

static void info_usage(void) {
    printf("usage: pgolf info [--extract-code OUT.tar.xz] FILE\n\n"
           "Prints a pgolf artifact's header (version, codecs, quantisation scheme, stored configuration),\n"
           "its tensors with their storage formats, and the byte accounting: model bytes + code bytes =\n"
           "total (the file size) against the 16,000,000-byte cap. --extract-code writes the embedded\n"
           "source bundle as stored (an xz-compressed tar: `tar xJf OUT.tar.xz` then `make`).\n"
           "For a safetensors file it lists the tensors.\n");
}

static const char *kind_name(const qtensor *t) {
    static char b[32];
    if (t->kind == QT_PASS) snprintf(b, sizeof(b), "pass-%s", pg_dtype_name(t->stored));
    else snprintf(b, sizeof(b), "int%d-%s", t->bits, t->kind == QT_ROW ? "row" : "tensor");
    return b;
}

static void shape_str(int ndim, const int64_t *sh, char *b, size_t n) {
    size_t o = (size_t)snprintf(b, n, "[");
    for (int d = 0; d < ndim && o < n; d++) o += (size_t)snprintf(b + o, n - o, "%s%lld", d ? "," : "", (long long)sh[d]);
    if (o < n) snprintf(b + o, n - o, "]");
}

int cmd_info(int argc, char **argv) {
    const char *path = NULL, *code_out = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            info_usage();
            return 0;
        }
        if (!strcmp(argv[i], "--extract-code")) {
            if (i + 1 >= argc) pg_die("info: --extract-code needs a file name");
            code_out = argv[++i];
        } else if (argv[i][0] == '-') pg_die("info: unknown option '%s' (see `pgolf info --help`)", argv[i]);
        else if (path) pg_die("info: more than one file given");
        else path = argv[i];
    }
    if (!path) pg_die("info: no file given (see `pgolf info --help`)");
    char err[PG_ERRLEN], sh[96];
    if (!artifact_is_artifact(path)) {
        statedict sd;
        if (safetensors_read(path, &sd, err, sizeof(err)) != 0)
            pg_die("%s: neither a pgolf artifact nor a readable safetensors file (%s)", path, err);
        size_t bytes = 0, params = 0;
        printf("file: %s\nformat: safetensors, %d tensors\n", path, sd.n);
        for (int i = 0; i < sd.n; i++) {
            shape_str(sd.t[i].ndim, sd.t[i].shape, sh, sizeof(sh));
            printf("  %-40s %-5s %-16s %zu bytes\n", sd.t[i].name, pg_dtype_name(sd.t[i].dtype), sh, sd.t[i].nbytes);
            bytes += sd.t[i].nbytes;
            params += (size_t)sd_numel(&sd.t[i]);
        }
        printf("params: %zu\ntensor bytes: %zu\n", params, bytes);
        sd_free(&sd);
        return 0;
    }
    artifact a;
    if (artifact_read(path, &a, err, sizeof(err)) != 0) pg_die("%s", err);
    qstate q;
    if (artifact_load_qstate(&a, path, &q, err, sizeof(err)) != 0) pg_die("%s", err);
    char cl[32], ccl[32];
    codec_label(&a.codec, cl, sizeof(cl));
    codec_label(&a.code_codec, ccl, sizeof(ccl));
    printf("file: %s\nformat: pgolf artifact version %u\n", path, a.version);
    printf("quant_scheme: %s\ncodec: %s\ncode_codec: %s\n", a.quant_scheme, cl, ccl);
    printf("config: %s\n", a.config_json);
    printf("metadata: %s\n", a.meta);
    size_t params = 0;
    printf("tensors: %d\n", q.n);
    for (int i = 0; i < q.n; i++) {
        const qtensor *t = &q.t[i];
        shape_str(t->ndim, t->shape, sh, sizeof(sh));
        size_t n = t->kind == QT_PASS ? t->nbytes / pg_dtype_size(t->stored) : t->nbytes;
        params += n;
        printf("  %-40s %-5s %-16s %-16s %zu bytes%s\n", t->name, pg_dtype_name(t->orig), sh, kind_name(t),
               t->nbytes + (t->kind == QT_PASS ? 0 : t->n_scale * pg_dtype_size(t->scale_dtype)),
               t->kind == QT_PASS ? "" : (t->scale_dtype == DT_F16 ? " (fp16 scales)" : " (fp32 scale)"));
    }
    printf("params: %zu\npayload: %zu bytes (codes + scales + passthrough)\n", params, quant_payload_bytes(&q));
    printf("sections: header %d + metadata %zu + model %zu (raw %zu) + code %zu (raw %zu) = %zu bytes\n", ART_HEADER_BYTES,
           a.meta_len, a.payload_len, a.payload_raw_len, a.code_len, a.code_raw_len, a.file_len);
    size_t model = a.file_len - a.code_len;
    printf("Serialized model: %zu bytes\nCode size: %zu bytes\nTotal submission size: %zu bytes\n", model, a.code_len, a.file_len);
    if (a.file_len <= PGOLF_SIZE_CAP)
        printf("size_check: OK, %zu bytes under the %d-byte cap\n", (size_t)PGOLF_SIZE_CAP - a.file_len, PGOLF_SIZE_CAP);
    else
        printf("size_check: OVER the %d-byte cap by %zu bytes (non-record)\n", PGOLF_SIZE_CAP, a.file_len - PGOLF_SIZE_CAP);
    if (code_out) {
        uint8_t *tar;
        size_t tl;
        if (artifact_load_code(&a, path, &tar, &tl, err, sizeof(err)) != 0) pg_die("%s", err); /* validates the stream */
        free(tar);
        if (pg_write_file_atomic(code_out, a.code, a.code_len, err, sizeof(err)) != 0) pg_die("%s", err);
        printf("code: wrote %s (%zu bytes, %s)\n", code_out, a.code_len, ccl);
    }
    qstate_free(&q);
    artifact_free(&a);
    return 0;
}
