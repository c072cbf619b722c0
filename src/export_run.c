/* export_run.c: see export_run.h. The sequence is train_gpt.py's (spec §2.9): raw state dict to
 * disk, quantise, serialize, compress, write the artifact, log the byte accounting, then read the
 * artifact back from disk, dequantise and load the weights into the model. */
#include "export_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "artifact.h"
#include "codec.h"
#include "common.h"
#include "gptq.h"
#include "quant.h"
#include "statedict.h"

int export_check_writable(const char *dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/.pgolf_write_test.%ld", dir, (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return pg_err(err, errlen, "%s: output directory is not writable", dir);
    fclose(f);
    unlink(path);
    return 0;
}

int export_pack(const pg_config *cfg, const statedict *sd, const char *path, export_sizes *sz, char *err, size_t errlen) {
    return export_pack_h(cfg, sd, NULL, path, sz, err, errlen);
}

int export_pack_h(const pg_config *cfg, const statedict *sd, const struct gptq_hessians *h, const char *path,
                  export_sizes *sz, char *err, size_t errlen) {
    memset(sz, 0, sizeof(*sz));
    quant_scheme qs;
    pg_codec codec;
    if (quant_scheme_parse(cfg->quant_scheme, &qs, err, errlen) != 0) return -1;
    char sub[PG_ERRLEN];
    if (codec_parse(cfg->export_codec, &codec, sub, sizeof(sub)) != 0) return pg_err(err, errlen, "EXPORT_CODEC: %s", sub);
    char cl[32];
    codec_label(&codec, cl, sizeof(cl));
    quant_labels(qs, cl, sz->log_label, sizeof(sz->log_label), sz->label_short, sizeof(sz->label_short));
    gptq_hessians own = {0};
    if (qs == QS_INT6_GPTQ && !h) {
        if (gptq_collect_statedict(cfg, sd, &own, err, errlen) != 0) return -1;
        h = &own;
    }
    quant_opts qo = {.control_patterns = cfg->control_tensor_name_patterns,
                     .keep_fp32_patterns = cfg->int8_keep_float_fp32_name_patterns,
                     .hessians = h,
                     .gptq_damp = cfg->gptq_damp,
                     .gptq_block = (int)cfg->gptq_block_size};
    qstate q;
    quant_stats st;
    int qrc = quantize_statedict(sd, qs, &qo, &q, &st, err, errlen);
    gptq_hessians_free(&own);
    if (qrc != 0) return -1;
    sz->n_gptq = st.n_gptq;
    sz->n_gptq_lite = st.n_gptq_lite;
    uint8_t *raw;
    size_t raw_len;
    q.pack6 = cfg->int6_pack; /* PGOLF_INT6_PACK: serialized version 2 */
    qstate_serialize(&q, &raw, &raw_len);
    qstate_free(&q);
    char *cj = artifact_config_json(cfg);
    char extra[512];
    snprintf(extra, sizeof(extra),
             "\"model_params\":%zu,\"n_tensors\":%zu,\"payload_bytes\":%zu,\"raw_tensor_bytes\":%zu,\"serialized_bytes\":%zu",
             st.param_count, st.num_tensors, st.payload_bytes, st.baseline_tensor_bytes, raw_len);
    uint8_t *file;
    size_t file_len;
    int rc = artifact_build(raw, raw_len, &codec, quant_scheme_name(qs), cj, extra, &file, &file_len, err, errlen);
    free(cj);
    free(raw);
    if (rc != 0) return -1;
    rc = pg_write_file_atomic(path, file, file_len, err, errlen);
    free(file);
    if (rc != 0) return -1;
    sz->file_bytes = file_len;
    sz->code_bytes = pgolf_src_bundle_len;
    sz->model_bytes = file_len - pgolf_src_bundle_len;
    sz->payload_bytes = st.payload_bytes;
    sz->raw_bytes = raw_len;
    sz->baseline_tensor_bytes = st.baseline_tensor_bytes;
    return 0;
}

int export_load_artifact(const char *path, statedict *sd, artifact_sizes *as, char *err, size_t errlen) {
    sd_init(sd);
    artifact a;
    if (artifact_read(path, &a, err, errlen) != 0) return -1;
    qstate q;
    int rc = artifact_load_qstate(&a, path, &q, err, errlen);
    if (rc == 0) {
        char sub[PG_ERRLEN];
        rc = dequantize_qstate(&q, sd, sub, sizeof(sub));
        if (rc != 0) pg_err(err, errlen, "%s: %s", path, sub);
        qstate_free(&q);
    }
    if (as) {
        as->file_bytes = a.file_len;
        as->code_bytes = a.code_len;
        as->model_bytes = a.file_len - a.code_len;
    }
    artifact_free(&a);
    return rc;
}

/* fail: the error goes to stderr and to the log, export returns -1 */
static int fail(export_run *ex, const char *msg) {
    fprintf(stderr, "pgolf: error: %s\n", msg);
    if (ex->log) ex->log(0, "error: %s", msg);
    return -1;
}

int export_and_roundtrip(export_run *ex) {
    char err[PG_ERRLEN], path[4096];
    const pg_config *cfg = ex->cfg;
    statedict sd;
    gpt_to_statedict(ex->model, &sd);

    /* the raw state dict, for information and for loading into PyTorch (train_gpt.py's final_model.pt);
     * its metadata carries the configuration so `pgolf eval`/`pgolf export` can rebuild the model */
    char *cj = artifact_config_json(cfg);
    const char *meta[] = {"format", "pt", "pgolf_config", cj};
    snprintf(path, sizeof(path), "%s/final_model.safetensors", cfg->out_dir);
    int rc = safetensors_write(path, &sd, meta, 2, err, sizeof(err));
    free(cj);
    if (rc != 0) {
        sd_free(&sd);
        return fail(ex, err);
    }
    struct stat stt;
    size_t raw_file = stat(path, &stt) == 0 ? (size_t)stt.st_size : 0;
    ex->code_bytes = pgolf_src_bundle_len;
    if (ex->log) {
        ex->log(1, "Serialized model: %zu bytes", raw_file);
        ex->log(1, "Code size: %zu bytes", ex->code_bytes);
        ex->log(1, "Total submission size: %zu bytes", raw_file + ex->code_bytes);
    }

    /* quantise + compress into the artifact */
    quant_scheme qs;
    if (quant_scheme_parse(cfg->quant_scheme, &qs, err, sizeof(err)) != 0) {
        sd_free(&sd);
        return fail(ex, err);
    }
    snprintf(ex->artifact_path, sizeof(ex->artifact_path), "%s/final_model.%s.pgolf", cfg->out_dir,
             qs == QS_INT8_BASELINE ? "int8" : "int6");
    gptq_hessians hs = {0};
    if (qs == QS_INT6_GPTQ && /* calibration with the model itself (PR #1392 §3.8 items 2-4, gptq.h) */
        gptq_calibrate(ex->model, cfg, &hs, ex->log, err, sizeof(err)) != 0) {
        sd_free(&sd);
        return fail(ex, err);
    }
    export_sizes sz;
    rc = export_pack_h(cfg, &sd, qs == QS_INT6_GPTQ ? &hs : NULL, ex->artifact_path, &sz, err, sizeof(err));
    gptq_hessians_free(&hs);
    sd_free(&sd);
    if (rc != 0) return fail(ex, err);
    if (ex->log && qs == QS_INT6_GPTQ) ex->log(1, "gptq_quantize: %zu GPTQ layers, %zu naive layers", sz.n_gptq, sz.n_gptq_lite);
    snprintf(ex->label_short, sizeof(ex->label_short), "%s", sz.label_short);
    ex->model_bytes = sz.model_bytes;
    ex->total_bytes = sz.file_bytes;
    if (ex->log) {
        ex->log(1, "Serialized model %s: %zu bytes (payload:%zu raw_torch:%zu payload_ratio:%.2fx)", sz.log_label,
                sz.model_bytes, sz.payload_bytes, sz.raw_bytes,
                (double)sz.baseline_tensor_bytes / (double)(sz.payload_bytes ? sz.payload_bytes : 1));
        ex->log(1, "Total submission size %s: %zu bytes", sz.log_label, sz.file_bytes);
        if (sz.file_bytes > PGOLF_SIZE_CAP)
            ex->log(1, "size_check: total %zu bytes is over the %d-byte cap by %zu bytes%s", sz.file_bytes, PGOLF_SIZE_CAP,
                    sz.file_bytes - PGOLF_SIZE_CAP, cfg->non_record ? " (PGOLF_NON_RECORD=1: non-record run)" : "");
    }

    /* the roundtrip: read the artifact back from disk, dequantise, load into the model */
    statedict dq;
    if (export_load_artifact(ex->artifact_path, &dq, NULL, err, sizeof(err)) != 0) return fail(ex, err);
    rc = gpt_from_statedict(ex->model, &dq, ex->artifact_path, err, sizeof(err));
    sd_free(&dq);
    if (rc != 0) return fail(ex, err);
    ex->t_eval_start = pg_now();
    return 0;
}
