/* stubs.c: TEMPORARY weak fallbacks for subcommands whose modules are still being written in
 * parallel; each real definition overrides its stub. This file is deleted once every command
 * exists. */
#include "cmds.h"
#include "common.h"

#define STUB(fn, what)                                                                             \
    __attribute__((weak)) int fn(int argc, char **argv) {                                          \
        (void)argc;                                                                                \
        (void)argv;                                                                                \
        pg_die("'%s' is not implemented in this build", what);                                     \
    }
STUB(cmd_train, "train")
STUB(cmd_eval, "eval")
STUB(cmd_info, "info")
STUB(cmd_tokenize, "tokenize")
STUB(cmd_export, "export")

/* spm.c is being written in parallel; these weak versions only keep the link working until then */
#include "spm.h"
__attribute__((weak)) spm_model *spm_load(const char *path, char *err, size_t errlen) {
    pg_err(err, errlen, "%s: SentencePiece reader not built yet", path);
    return NULL;
}
__attribute__((weak)) int spm_vocab_size(const spm_model *m) { (void)m; return 0; }
__attribute__((weak)) void spm_byte_luts(const spm_model *m, int n, int16_t *a, uint8_t *b, uint8_t *c) {
    (void)m; (void)n; (void)a; (void)b; (void)c;
}
__attribute__((weak)) void spm_free(spm_model *m) { (void)m; }
