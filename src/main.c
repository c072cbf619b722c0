/* main.c: the pgolf program, one binary with subcommands (see cmds.h). */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "common.h"

#define PGOLF_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} COMMANDS[] = {
    {"train", cmd_train, "train a model configured by train_gpt.py's environment variables, pack, reload, score"},
    {"eval", cmd_eval, "score an artifact on validation shards (standard and sliding window)"},
    {"info", cmd_info, "print an artifact's tensors, formats and byte accounting"},
    {"tokenize", cmd_tokenize, "turn text (JSONL / plain text) into challenge-format shards"},
    {"export", cmd_export, "write an artifact's weights as safetensors with PyTorch state-dict names"},
    {"plot", cmd_plot, "draw loss and val_bpb curves of training logs (PNG/SVG through gnuplot)"},
    {"compare", cmd_compare, "a table of runs from their logs: steps, ms/step, val_bpb, bytes, config differences"},
    {"submit", cmd_submit, "build a records-style submission folder from seed logs and the artifact"},
    {"sample", cmd_sample, "generate text from an artifact (prompt, temperature, top-k, seed; KV cache)"},
};
#define N_COMMANDS (int)(sizeof(COMMANDS) / sizeof(COMMANDS[0]))

static void usage(FILE *f) {
    fprintf(f, "pgolf %s: Parameter Golf in C\nusage: pgolf <command> [args]\n\ncommands:\n", PGOLF_VERSION);
    for (int k = 0; k < N_COMMANDS; k++) fprintf(f, "  %-9s %s\n", COMMANDS[k].name, COMMANDS[k].help);
    fprintf(f, "\n`pgolf <command> --help` describes a command. `pgolf train --help` lists every\n"
               "configuration variable with its default.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("pgolf %s\n", PGOLF_VERSION);
        return 0;
    }
    for (int k = 0; k < N_COMMANDS; k++)
        if (!strcmp(argv[1], COMMANDS[k].name)) return COMMANDS[k].fn(argc - 2, argv + 2);
    pg_die("unknown command '%s' (see `pgolf --help`)", argv[1]);
}
