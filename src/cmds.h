/* cmds.h: the subcommands of the pgolf program. Each takes the arguments after its name and
 * returns the process exit status. */
#ifndef PGOLF_CMDS_H
#define PGOLF_CMDS_H

int cmd_train(int argc, char **argv);    /* train.c: train, pack, reload, score (train_gpt.py) */
int cmd_eval(int argc, char **argv);     /* eval_cmd.c: score an artifact on validation shards */
int cmd_info(int argc, char **argv);     /* artifact.c: tensors, formats and byte accounting */
int cmd_tokenize(int argc, char **argv); /* tokenize.c: text -> challenge shards */
int cmd_export(int argc, char **argv);   /* export.c: artifact -> safetensors */
int cmd_plot(int argc, char **argv);     /* tools.c: loss curves of training logs (gnuplot) */
int cmd_compare(int argc, char **argv);  /* tools.c: a table of runs from their logs */
int cmd_submit(int argc, char **argv);   /* tools.c: a records-style submission folder */
int cmd_sample(int argc, char **argv);   /* sample.c: text generation from an artifact */

#endif
