/* export_run.c: see export_run.h. */
#include "export_run.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
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

int export_and_roundtrip(export_run *ex) {
    char err[PG_ERRLEN], path[4096];
    statedict sd;
    gpt_to_statedict(ex->model, &sd);
    snprintf(path, sizeof(path), "%s/final_model.safetensors", ex->cfg->out_dir);
    if (safetensors_write(path, &sd, NULL, 0, err, sizeof(err)) != 0) {
        sd_free(&sd);
        pg_die("%s", err);
    }
    sd_free(&sd);
    /* TODO(export): quantise + compress into the artifact once src/artifact.c lands */
    snprintf(ex->label_short, sizeof(ex->label_short), "raw");
    ex->t_eval_start = pg_now();
    return 0;
}
