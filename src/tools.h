/* tools.h: the plotting entry of tools.c, for callers other than `pgolf plot` (train.c can draw a
 * run's curves at its end). */
#ifndef PGOLF_TOOLS_H
#define PGOLF_TOOLS_H

#include <stddef.h>

/* Draw the curves of n logs into png and/or svg (either may be NULL) through gnuplot; xmode is
 * "step", "time" or "both". Each output is written atomically. 0, or -1 with one line in err. */
int tools_plot(int n, char **paths, const char *png, const char *svg, const char *xmode, char *err, size_t errlen);

#endif
