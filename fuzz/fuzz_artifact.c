/* fuzz_artifact.c: the pgolf artifact reader (src/artifact.h) and everything an artifact's bytes
 * reach when `pgolf eval/export/info` loads one:
 *   artifact_parse (header, sizes, codecs, CRC-64s, metadata JSON) -> artifact_load_qstate
 *   (bounded decompression, qstate_parse) -> dequantize_qstate -> artifact_load_code ->
 *   artifact_config (the stored configuration through config_from_json / config_validate).
 * Each input runs twice: as it is (so the checksum and size checks themselves are fuzzed), then
 * with its size field and CRCs recomputed (fuzz_fix_artifact) so mutations reach the sections
 * behind the checksums. An input starting with "PGQ1" is also fed to qstate_parse directly (the
 * uncompressed model payload). */
#include <stdlib.h>
#include <string.h>

#include "artifact.h"
#include "common.h"
#include "fuzz_support.h"
#include "quant.h"
#include "statedict.h"

static void use_qstate(const qstate *q) {
    statedict sd;
    char err[PG_ERRLEN] = "";
    if (dequantize_qstate(q, &sd, err, sizeof(err)) != 0) {
        fuzz_check_err(err, "dequantize_qstate");
        return;
    }
    if (sd.n != q->n) abort();
    fuzz_note("dequantize_qstate: %d tensors", sd.n);
    (void)quant_payload_bytes(q);
    sd_free(&sd);
}

static void one(const uint8_t *data, size_t size, int fix) {
    char err[PG_ERRLEN] = "";
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    if (fix && !fuzz_fix_artifact(buf, size)) {
        free(buf);
        return;
    }
    artifact a;
    if (artifact_parse(buf, size, "fuzz.pgolf", &a, err, sizeof(err)) != 0) { /* buf freed */
        fuzz_check_err(err, "artifact_parse");
        return;
    }
    fuzz_note("artifact_parse: ok%s, scheme %s", fix ? " (CRCs repaired)" : "", a.quant_scheme);
    if (a.file_len != size || a.code_len > size || !a.config_json || !a.meta) abort();
    qstate q;
    err[0] = 0;
    if (artifact_load_qstate(&a, "fuzz.pgolf", &q, err, sizeof(err)) == 0) {
        use_qstate(&q);
        qstate_free(&q);
    } else {
        fuzz_check_err(err, "artifact_load_qstate");
    }
    uint8_t *tar = NULL;
    size_t tl = 0;
    err[0] = 0;
    if (artifact_load_code(&a, "fuzz.pgolf", &tar, &tl, err, sizeof(err)) == 0) {
        if (tl != a.code_raw_len) abort();
        fuzz_note("artifact_load_code: %zu bytes", tl);
        free(tar);
    } else {
        fuzz_check_err(err, "artifact_load_code");
    }
    pg_config cfg;
    err[0] = 0;
    if (artifact_config(&a, &cfg, err, sizeof(err)) == 0) {
        fuzz_note("artifact_config: ok");
        config_free(&cfg);
    }
    else fuzz_check_err(err, "artifact_config");
    artifact_free(&a);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* artifact_config applies the environment: make it the same for every run */
    clearenv();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size >= 4 && !memcmp(data, "PGQ1", 4)) {
        qstate q;
        char err[PG_ERRLEN] = "";
        if (qstate_parse(data, size, "fuzz", &q, err, sizeof(err)) == 0) {
            use_qstate(&q);
            qstate_free(&q);
        } else {
            fuzz_check_err(err, "qstate_parse");
        }
        return 0;
    }
    one(data, size, 0);
    one(data, size, 1);
    return 0;
}
