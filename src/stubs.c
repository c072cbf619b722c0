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
