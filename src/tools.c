/* tools.c: the participant's commands around training logs (issue 10):
 *   pgolf plot    loss and val_bpb curves of one or more runs, PNG and/or SVG through gnuplot
 *   pgolf compare a table of runs: steps, ms/step, final val_bpb, bytes, differing config keys
 *   pgolf submit  a records/track_10min_16mb/DATE_NAME/ folder: README.md, submission.json in the
 *                 challenge's multi-seed schema, the logs, the size accounting, and Welch's t-test
 *                 against the previous record's per-seed scores
 * Logs are read by runlog.c (pgolf's own logs and the records' train_gpt.py logs); the statistics
 * are in stats.c. Every output is written atomically: a file through a temporary and a rename, the
 * submission folder built under a temporary name beside its destination and renamed into place. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "artifact.h"
#include "cmds.h"
#include "common.h"
#include "export_run.h"
#include "runlog.h"
#include "stats.h"
#include "tools.h"

/* ---- a growable string ---- */
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->n;
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? room : 0, fmt, ap);
        va_end(ap);
        PG_CHECK(k >= 0);
        if (b->s && (size_t)k < room) {
            b->n += (size_t)k;
            return;
        }
        b->cap = 2 * (b->n + (size_t)k + 64);
        b->s = xrealloc(b->s, b->cap);
    }
}

/* JSON string body (quotes added) */
static void sb_json_str(sbuf *b, const char *s) {
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
        else if (c == '\n') sb_printf(b, "\\n");
        else if (c == '\t') sb_printf(b, "\\t");
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_printf(b, "%c", c);
    }
    sb_printf(b, "\"");
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void load_logs(const char *cmd, int n, char **paths, runlog *runs) {
    char err[PG_ERRLEN];
    for (int i = 0; i < n; i++)
        if (runlog_read(paths[i], &runs[i], err, sizeof(err)) != 0) pg_die("%s: %s", cmd, err);
}

/* distinct short labels: the file name, or dir/file name when two runs share one */
static char **make_labels(int n, runlog *runs) {
    char **lab = xcalloc((size_t)n, sizeof(char *));
    int *dup = xcalloc((size_t)n, sizeof(int));
    for (int i = 0; i < n; i++) lab[i] = runlog_label(runs[i].path);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (j != i && !strcmp(lab[i], lab[j])) dup[i] = 1;
    for (int i = 0; i < n; i++) {
        const char *p = runs[i].path, *end = strrchr(p, '/');
        if (!dup[i] || !end) continue;
        const char *start = end;
        while (start > p && start[-1] != '/') start--;
        size_t n1 = (size_t)(end - start) + strlen(lab[i]) + 2;
        char *s = xmalloc(n1);
        snprintf(s, n1, "%.*s/%s", (int)(end - start), start, lab[i]);
        free(lab[i]);
        lab[i] = s;
    }
    free(dup);
    return lab;
}

static void free_labels(int n, char **lab) {
    for (int i = 0; i < n; i++) free(lab[i]);
    free(lab);
}

/* ======================================================================================== plot */

static const char *const COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                     "#9467bd", "#8c564b", "#e377c2", "#17becf"};
#define N_COLORS (int)(sizeof(COLORS) / sizeof(COLORS[0]))

/* training time of a step by linear interpolation over the run's train points (PR #1392's val
 * lines carry no time); NAN if the run logs no times */
static double time_at_step(const runlog *r, long step) {
    if (step == 0) return 0;
    long s0 = 0;
    double t0 = 0;
    for (size_t i = 0; i < r->n_train; i++) {
        const rl_train_pt *p = &r->train[i];
        if (isnan(p->time_ms)) continue;
        if (p->step == step) return p->time_ms;
        if (p->step > step) {
            if (p->step == s0) return p->time_ms;
            return t0 + (p->time_ms - t0) * (double)(step - s0) / (double)(p->step - s0);
        }
        s0 = p->step;
        t0 = p->time_ms;
    }
    if (s0 == step) return t0;
    if (s0 == 0) return NAN;
    /* after the last train line: the run's last time (stopping_early's) if it is this step's,
     * else the average pace */
    if (step == r->last_step && isfinite(r->train_time_ms) && r->train_time_ms >= t0) return r->train_time_ms;
    return t0 * (double)step / (double)s0;
}

/* gnuplot single-quoted string: ' doubled */
static void sb_gp_str(sbuf *b, const char *s) {
    sb_printf(b, "'");
    for (; *s; s++) {
        if (*s == '\'') sb_printf(b, "''");
        else if ((unsigned char)*s >= 0x20) sb_printf(b, "%c", *s);
    }
    sb_printf(b, "'");
}

typedef struct {
    double lo, hi;
    int set;
} yrange;

static void yr_add(yrange *y, double v) {
    if (!isfinite(v)) return;
    if (!y->set) y->lo = y->hi = v, y->set = 1;
    if (v < y->lo) y->lo = v;
    if (v > y->hi) y->hi = v;
}

/* The legend of nkeys lines sits inside a plot area about area_px high, above the data, unless that
 * would take more than 45% of the height: then it goes outside, to the right. */
static double key_fraction(int nkeys, double area_px) { return (nkeys * 18.0 + 16.0) / area_px; }
static int key_outside(int nkeys, double area_px) { return key_fraction(nkeys, area_px) > 0.45; }

/* The y range, with room above the data for the legend, so that the (opaque) legend never hides a
 * curve. */
static void sb_yrange(sbuf *b, const yrange *lo, const yrange *hi, int nkeys, double area_px) {
    const double f = key_fraction(nkeys, area_px);
    const int outside = key_outside(nkeys, area_px);
    if (outside) sb_printf(b, "set key outside right top\n");
    else sb_printf(b, "set key inside top right\n");
    if (!lo->set || !hi->set) {
        sb_printf(b, "set yrange [*:*]\n");
        return;
    }
    double a = lo->lo, z = hi->hi;
    double span = z - a;
    if (!(span > 0)) span = fabs(a) > 0 ? 0.05 * fabs(a) : 1;
    double top = z + 0.04 * span + (outside ? 0 : span * f / (1 - f));
    sb_printf(b, "set yrange [%.6g:%.6g]\n", a - 0.03 * span, top);
}

/* UTF-8: the characters of s; where its character k starts */
static int utf8_chars(const char *s) {
    int n = 0;
    for (; *s; s++) n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}
static const char *utf8_at(const char *s, int k) {
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80 && k-- == 0) break;
    return s;
}

/* s in at most max characters: longer keeps its start and end around "..." */
static char *ellipsize(const char *s, int max) {
    const int nc = utf8_chars(s);
    if (nc <= max || max < 5) return xstrdup(s);
    const int head = (max - 2) / 2, tail = (max - 3) / 2;
    const char *h = utf8_at(s, head), *t = utf8_at(s, nc - tail);
    const size_t hn = (size_t)(h - s), n = hn + 3 + strlen(t) + 1;
    char *r = xmalloc(n);
    snprintf(r, n, "%.*s...%s", (int)hn, s, t);
    return r;
}

static int name_sep(char c) { return c == '_' || c == '-' || c == '.' || c == '/' || c == ' '; }

/* Legend labels that fit their panel (max characters). Only when one does not: the start and end
 * that every run's name shares (cut at '_', '-', '.', '/' or ' ') leave the labels and are returned
 * as "start*end" for the title; what is still too long keeps its start and end around "...". */
static char *fit_labels(int n, char **lab, int max) {
    int too_long = 0;
    for (int i = 0; i < n; i++) too_long |= utf8_chars(lab[i]) > max;
    if (!too_long) return NULL;
    char *shared = NULL;
    if (n > 1) {
        size_t len0 = strlen(lab[0]), minlen = len0, p = 0, q = 0;
        for (int i = 1; i < n; i++)
            if (strlen(lab[i]) < minlen) minlen = strlen(lab[i]);
        for (int same = 1; same && p < minlen; p += same)
            for (int i = 1; i < n; i++) same &= lab[i][p] == lab[0][p];
        while (p > 0 && !name_sep(lab[0][p - 1])) p--;
        for (int same = 1; same && q < minlen - p; q += same)
            for (int i = 1; i < n; i++) same &= lab[i][strlen(lab[i]) - 1 - q] == lab[0][len0 - 1 - q];
        while (q > 0 && !name_sep(lab[0][len0 - q])) q--;
        for (int i = 0; i < n; i++)
            if (strlen(lab[i]) <= p + q) q = 0;
        for (int i = 0; i < n; i++)
            if (strlen(lab[i]) <= p + q) p = 0;
        if (p + q > 0) {
            shared = xmalloc(p + q + 2);
            snprintf(shared, p + q + 2, "%.*s*%s", (int)p, lab[0], lab[0] + len0 - q);
            for (int i = 0; i < n; i++) {
                size_t li = strlen(lab[i]);
                memmove(lab[i], lab[i] + p, li - p - q);
                lab[i][li - p - q] = 0;
            }
        }
    }
    for (int i = 0; i < n; i++) {
        char *e = ellipsize(lab[i], max);
        free(lab[i]);
        lab[i] = e;
    }
    return shared;
}

int tools_plot(int n, char **paths, const char *png, const char *svg, const char *xmode, char *err, size_t errlen) {
    int want_step = strcmp(xmode, "time") != 0, want_time = strcmp(xmode, "step") != 0;
    runlog *runs = xcalloc((size_t)n, sizeof(runlog));
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++)
        if (runlog_read(paths[i], &runs[i], err, errlen) != 0) {
            for (int j = 0; j < i; j++) runlog_free(&runs[j]);
            free(runs);
            return -1;
        }
    char **lab = make_labels(n, runs);

    const char *tmpbase = getenv("TMPDIR");
    if (!tmpbase || !*tmpbase) tmpbase = "/tmp";
    char *scratch = path_join(tmpbase, "pgolf-plot.XXXXXX"); /* gnuplot's data, scripts and pictures */
    if (pg_scratch_mkdir(scratch, 1) != 0) {
        rc = pg_err(err, errlen, "%s: cannot create a temporary directory: %s", tmpbase, strerror(errno));
        free(scratch);
        scratch = NULL;
    }

    /* data files and ranges */
    double tmax_ms = 0;
    int have_time = 0;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < runs[i].n_train; k++)
            if (isfinite(runs[i].train[k].time_ms)) {
                have_time = 1;
                if (runs[i].train[k].time_ms > tmax_ms) tmax_ms = runs[i].train[k].time_ms;
            }
    if (!have_time) want_time = 0;
    if (!want_step && !want_time) want_step = 1;
    double tdiv = tmax_ms >= 180000 ? 60000 : 1000;
    const char *tunit = tmax_ms >= 180000 ? "min" : "s";
    yrange loss_lo = {0}, loss_hi = {0}, bpb_lo = {0}, bpb_hi = {0};
    for (int i = 0; i < n && rc == 0; i++) {
        const runlog *r = &runs[i];
        long maxstep = r->last_step > 0 ? r->last_step : 1;
        sbuf d = {0};
        sb_printf(&d, "# step time_%s train_loss\n", tunit);
        for (size_t k = 0; k < r->n_train; k++) {
            const rl_train_pt *p = &r->train[k];
            sb_printf(&d, "%ld %.6f %.6g\n", p->step, p->time_ms / tdiv, p->loss);
            yr_add(&loss_lo, p->loss);
            /* the first tenth of a run (loss spikes of the first steps) does not set the top */
            if (p->step * 10 >= maxstep) yr_add(&loss_hi, p->loss);
        }
        char name[64];
        snprintf(name, sizeof(name), "run%d_train.dat", i);
        char *fp = path_join(scratch, name);
        if (pg_write_file_atomic(fp, d.s ? d.s : "", d.n, err, errlen) != 0) rc = -1;
        free(fp);
        d.n = 0;
        sb_printf(&d, "# step time_%s val_loss val_bpb\n", tunit);
        for (size_t k = 0; k < r->n_val; k++) {
            const rl_val_pt *p = &r->val[k];
            double t = isnan(p->time_ms) ? time_at_step(r, p->step) : p->time_ms;
            sb_printf(&d, "%ld %.6f %.6g %.6g\n", p->step, t / tdiv, p->loss, p->bpb);
            yr_add(&loss_lo, p->loss);
            yr_add(&bpb_lo, p->bpb);
            if (p->step > 0 || r->n_val == 1) {
                yr_add(&loss_hi, p->loss);
                yr_add(&bpb_hi, p->bpb);
            }
        }
        snprintf(name, sizeof(name), "run%d_val.dat", i);
        fp = path_join(scratch, name);
        if (rc == 0 && pg_write_file_atomic(fp, d.s, d.n, err, errlen) != 0) rc = -1;
        free(fp);
        free(d.s);
    }
    if (!loss_hi.set) loss_hi = loss_lo;
    if (!bpb_hi.set) bpb_hi = bpb_lo;

    int any_val = 0;
    for (int i = 0; i < n; i++) any_val |= runs[i].n_val > 0;
    int rows = want_step + want_time, cols = any_val ? 2 : 1;
    int width = cols == 2 ? 1500 : 900, height = rows == 2 ? 1000 : 540;

    int keys_loss = 0, keys_bpb = 0;
    for (int i = 0; i < n; i++) {
        keys_loss += n > 1 ? (runs[i].n_train || runs[i].n_val) : (runs[i].n_train > 0) + (runs[i].n_val > 0);
        keys_bpb += runs[i].n_val > 0;
    }
    double area = (double)height / rows - 120; /* plot area of one panel, pixels */
    /* legend width: about 8.7 px a character (DejaVu Sans 11) for the text and 8 more characters for
     * the line sample and the box; it must fit a panel's plot area (the panel less about 140 px of
     * axis margins), where " (final 2.8944)" follows a name in the val_bpb panel. A legend outside
     * takes at most a third of the panel. */
    double panel = (double)width / cols;
    int max_label = (int)((panel - 140) / 8.7) - 8 - (cols == 2 ? 15 : 4);
    if (key_outside(keys_loss > keys_bpb ? keys_loss : keys_bpb, area)) max_label = (int)(panel / 3 / 8.7) - 8 - 15;
    if (max_label < 12) max_label = 12;
    char *shared = n > 1 ? fit_labels(n, lab, max_label) : NULL; /* one run: the name is only the title */

    /* one script per output format */
    const char *outs[2] = {png, svg};
    for (int f = 0; f < 2 && rc == 0; f++) {
        if (!outs[f]) continue;
        sbuf s = {0};
        char *tmpout = path_join(scratch, f == 0 ? "out.png" : "out.svg");
        if (f == 0)
            sb_printf(&s, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
                          "  set terminal pngcairo size %d,%d noenhanced font 'DejaVu Sans,11' linewidth 1.3\n"
                          "} else {\n"
                          "  set terminal png size %d,%d noenhanced\n"
                          "}\n",
                      width, height, width, height);
        else sb_printf(&s, "set terminal svg size %d,%d noenhanced font 'DejaVu Sans,12' linewidth 1.3 background '#ffffff'\n", width, height);
        sb_printf(&s, "set output ");
        sb_gp_str(&s, tmpout);
        sb_printf(&s, "\nset datafile missing 'NaN'\nset grid lc rgb '#dddddd'\nset border lc rgb '#555555'\n"
                      "set key box opaque samplen 3 spacing 1.1\nset tics nomirror\nset mxtics\n");
        sb_printf(&s, "set multiplot layout %d,%d title ", rows, cols);
        {
            char t[600];
            if (n == 1) snprintf(t, sizeof(t), "%s", lab[0]);
            else if (shared) snprintf(t, sizeof(t), "%d runs: %.500s", n, shared);
            else snprintf(t, sizeof(t), "%d runs", n);
            char *te = ellipsize(t, (int)(width / 10.5));
            sb_gp_str(&s, te);
            free(te);
        }
        sb_printf(&s, " font ',13'\n");
        for (int row = 0; row < 2; row++) {
            if ((row == 0 && !want_step) || (row == 1 && !want_time)) continue;
            const char *xcol = row == 0 ? "1" : "2";
            char xlabel[64];
            if (row == 0) snprintf(xlabel, sizeof(xlabel), "step");
            else snprintf(xlabel, sizeof(xlabel), "training time (%s)", tunit);
            /* loss panel */
            sb_printf(&s, "set title 'loss vs %s: train (solid), val (dashed, dots)'\nset xlabel '%s'\n"
                          "set ylabel 'loss (nats/token)'\n",
                      row == 0 ? "step" : "training time", xlabel);
            sb_printf(&s, "set xrange [0:*]\n");
            sb_yrange(&s, &loss_lo, &loss_hi, keys_loss, area);
            sb_printf(&s, "plot ");
            int first = 1;
            for (int i = 0; i < n; i++) {
                const char *col = COLORS[i % N_COLORS];
                char lt[160];
                snprintf(lt, sizeof(lt), "lc rgb '%s'", col);
                if (runs[i].n_train) {
                    char nm[64];
                    snprintf(nm, sizeof(nm), "run%d_train.dat", i);
                    char *fp = path_join(scratch, nm);
                    sb_printf(&s, "%s", first ? "" : ", \\\n     ");
                    sb_gp_str(&s, fp);
                    char t[600];
                    snprintf(t, sizeof(t), "%s", n > 1 ? lab[i] : "train");
                    sb_printf(&s, " using %s:3 with lines %s lw 1 title ", xcol, lt);
                    sb_gp_str(&s, t);
                    free(fp);
                    first = 0;
                }
                if (runs[i].n_val) {
                    char nm[64];
                    snprintf(nm, sizeof(nm), "run%d_val.dat", i);
                    char *fp = path_join(scratch, nm);
                    sb_printf(&s, "%s", first ? "" : ", \\\n     ");
                    sb_gp_str(&s, fp);
                    char t[600];
                    sb_printf(&s, " using %s:3 with linespoints %s lw 2 dt 2 pt 7 ps 0.9 ", xcol, lt);
                    if (n > 1 && runs[i].n_train) sb_printf(&s, "notitle");
                    else {
                        snprintf(t, sizeof(t), "%s%sval", n > 1 ? lab[i] : "", n > 1 ? " " : "");
                        sb_printf(&s, "title ");
                        sb_gp_str(&s, t);
                    }
                    free(fp);
                    first = 0;
                }
            }
            sb_printf(&s, "\n");
            if (cols == 2) {
                sb_printf(&s, "set title 'val_bpb vs %s'\nset ylabel 'val_bpb (bits/byte)'\n",
                          row == 0 ? "step" : "training time");
                sb_yrange(&s, &bpb_lo, &bpb_hi, keys_bpb, area);
                sb_printf(&s, "plot ");
                first = 1;
                for (int i = 0; i < n; i++) {
                    if (!runs[i].n_val) continue;
                    char nm[64];
                    snprintf(nm, sizeof(nm), "run%d_val.dat", i);
                    char *fp = path_join(scratch, nm);
                    sb_printf(&s, "%s", first ? "" : ", \\\n     ");
                    sb_gp_str(&s, fp);
                    char t[700];
                    const rl_final *fin = runlog_final(&runs[i], NULL);
                    if (fin) snprintf(t, sizeof(t), "%s%sfinal %.4f", n > 1 ? lab[i] : "", n > 1 ? " (" : "(", fin->val_bpb);
                    else snprintf(t, sizeof(t), "%s", n > 1 ? lab[i] : "val_bpb");
                    if (fin) strncat(t, ")", sizeof(t) - strlen(t) - 1);
                    sb_printf(&s, " using %s:4 with linespoints lc rgb '%s' lw 2 pt 7 ps 0.9 title ", xcol,
                              COLORS[i % N_COLORS]);
                    sb_gp_str(&s, t);
                    free(fp);
                    first = 0;
                }
                sb_printf(&s, "\n");
            }
        }
        sb_printf(&s, "unset multiplot\nset output\n");
        char *sp = path_join(scratch, f == 0 ? "plot_png.gp" : "plot_svg.gp");
        if (pg_write_file_atomic(sp, s.s, s.n, err, errlen) != 0) rc = -1;
        free(s.s);
        /* run gnuplot */
        if (rc == 0) {
            const char *gp = getenv("PGOLF_GNUPLOT");
            if (!gp || !*gp) gp = "gnuplot";
            char *logp = path_join(scratch, "gnuplot.err");
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0) rc = pg_err(err, errlen, "cannot start gnuplot: %s", strerror(errno));
            else if (pid == 0) {
                FILE *e = freopen(logp, "w", stderr);
                (void)e;
                if (!freopen("/dev/null", "w", stdout)) _exit(126);
                execlp(gp, gp, sp, (char *)NULL);
                _exit(127);
            } else {
                int st = 0;
                while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
                        rc = pg_err(err, errlen, "cannot run '%s': not installed? (Debian: apt-get install gnuplot-nox)", gp);
                    else {
                        /* the first line of gnuplot's complaint that says something */
                        char line[300] = "";
                        FILE *e = fopen(logp, "r");
                        if (e) {
                            char buf[300];
                            while (fgets(buf, sizeof(buf), e)) {
                                buf[strcspn(buf, "\r\n")] = 0;
                                if (strstr(buf, "rror") || strstr(buf, "arning")) {
                                    snprintf(line, sizeof(line), "%s", buf);
                                    break;
                                }
                                if (!line[0] && buf[0] && buf[0] != ' ') snprintf(line, sizeof(line), "%s", buf);
                            }
                            fclose(e);
                        }
                        rc = pg_err(err, errlen, "gnuplot failed (status %d): %s", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                                    line[0] ? line : "no message");
                    }
                }
            }
            free(logp);
        }
        free(sp);
        /* move the picture into place atomically */
        if (rc == 0) {
            uint8_t *img;
            size_t len;
            if (pg_read_file(tmpout, &img, &len, err, errlen) != 0) rc = -1;
            else {
                if (len == 0) rc = pg_err(err, errlen, "gnuplot wrote an empty %s", f == 0 ? "PNG" : "SVG");
                else if (pg_write_file_atomic(outs[f], img, len, err, errlen) != 0) rc = -1;
                free(img);
            }
        }
        free(tmpout);
    }
    if (scratch) pg_scratch_remove(scratch), free(scratch);
    free(shared);
    free_labels(n, lab);
    for (int i = 0; i < n; i++) runlog_free(&runs[i]);
    free(runs);
    return rc;
}

static void plot_usage(void) {
    printf("usage: pgolf plot [-o OUT.png] [--svg OUT.svg] [--x step|time|both] LOG...\n\n"
           "Draw train loss, val loss and val_bpb of one or more training logs (pgolf's logs/$RUN_ID.txt\n"
           "or the records' train_gpt.py logs), overlaid, against the step and against the training\n"
           "time, with gnuplot (Debian: gnuplot-nox; PGOLF_GNUPLOT names another binary).\n\n"
           "  -o, --png FILE   write a PNG (default plot.png when no --svg is given)\n"
           "  --svg FILE       write an SVG\n"
           "  --x MODE         step, time, or both (default): the x axes drawn\n"
           "The first tenth of each run does not set the top of the loss axis (early spikes).\n");
}

int cmd_plot(int argc, char **argv) {
    const char *png = NULL, *svg = NULL, *xmode = "both";
    char **logs = xcalloc((size_t)argc + 1, sizeof(char *));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            plot_usage();
            free(logs);
            return 0;
        }
        if (!strcmp(a, "-o") || !strcmp(a, "--png") || !strcmp(a, "--svg") || !strcmp(a, "--x")) {
            if (i + 1 >= argc) pg_die("plot: %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--svg")) svg = v;
            else if (!strcmp(a, "--x")) {
                if (strcmp(v, "step") && strcmp(v, "time") && strcmp(v, "both"))
                    pg_die("plot: --x must be step, time or both, not '%s'", v);
                xmode = v;
            } else png = v;
        } else if (a[0] == '-' && a[1]) pg_die("plot: unknown option '%s' (see `pgolf plot --help`)", a);
        else logs[n++] = argv[i];
    }
    if (n == 0) pg_die("plot: no log given (see `pgolf plot --help`)");
    if (!png && !svg) png = "plot.png";
    char err[PG_ERRLEN];
    if (tools_plot(n, logs, png, svg, xmode, err, sizeof(err)) != 0) pg_die("plot: %s", err);
    if (png) printf("plot: wrote %s\n", png);
    if (svg) printf("plot: wrote %s\n", svg);
    free(logs);
    return 0;
}

/* ===================================================================================== compare */

/* values equal as numbers (0.05 == 0.050000000000000003), as booleans (True == 1), or as text */
static int same_value(const char *a, const char *b) {
    if (!strcmp(a, b)) return 1;
    char *ea, *eb;
    double x = strtod(a, &ea), y = strtod(b, &eb);
    if (ea != a && !*ea && eb != b && !*eb) return x == y || fabs(x - y) <= 1e-12 * fmax(fabs(x), fabs(y));
    int ba = !strcmp(a, "True") ? 1 : !strcmp(a, "False") ? 0 : -1;
    int bb = !strcmp(b, "True") ? 1 : !strcmp(b, "False") ? 0 : -1;
    if (ba >= 0 && bb < 0 && eb != b && !*eb) return (double)ba == y;
    if (bb >= 0 && ba < 0 && ea != a && !*ea) return (double)bb == x;
    return 0;
}

/* a short display form: numbers through %.6g */
static void show_value(const char *v, char *out, size_t n) {
    char *e;
    double x = strtod(v, &e);
    if (e != v && !*e && strlen(v) > 8) snprintf(out, n, "%.6g", x);
    else snprintf(out, n, "%s", v);
}

/* key (upper case) in a run's configuration, else its lower-case form (train_gpt.py's header) */
static const char *cfg_lookup(const runlog *r, const char *key) {
    const char *v = runlog_cfg(r, key);
    if (v) return v;
    char low[256];
    snprintf(low, sizeof(low), "%s", key);
    for (char *p = low; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
    return runlog_cfg(r, low);
}

static int ignored_key(const char *k) {
    static const char *const skip[] = {"RUN_ID", "PGOLF_OUT_DIR", "PGOLF_LOG_DIR", "CHECKPOINT_PATH", "RESUME", "LOGFILE", "RANK", "LOCAL_RANK", "IS_MAIN_PROCESS", "DISTRIBUTED", NULL};
    for (int i = 0; skip[i]; i++)
        if (!strcmp(k, skip[i])) return 1;
    return 0;
}

typedef struct {
    int n;
    char **cells; /* rows x (n + 1) */
    int rows;
} table;

static void table_row(table *t, const char *name, char **vals) {
    t->cells = xrealloc(t->cells, (size_t)(t->rows + 1) * (size_t)(t->n + 1) * sizeof(char *));
    t->cells[(size_t)t->rows * (size_t)(t->n + 1)] = xstrdup(name);
    for (int i = 0; i < t->n; i++) t->cells[(size_t)t->rows * (size_t)(t->n + 1) + 1 + (size_t)i] = xstrdup(vals[i] ? vals[i] : "-");
    t->rows++;
}

static void table_print(const table *t, int markdown, FILE *f) {
    int cols = t->n + 1;
    size_t *w = xcalloc((size_t)cols, sizeof(size_t));
    for (int r = 0; r < t->rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t l = strlen(t->cells[(size_t)r * (size_t)cols + (size_t)c]);
            if (l > w[c]) w[c] = l;
        }
    for (int r = 0; r < t->rows; r++) {
        const char *name = t->cells[(size_t)r * (size_t)cols];
        if (!markdown && name[0] == '#') { /* section heading */
            fprintf(f, "%s\n", name + 1);
            continue;
        }
        if (markdown && name[0] == '#') continue;
        for (int c = 0; c < cols; c++) {
            const char *v = t->cells[(size_t)r * (size_t)cols + (size_t)c];
            if (markdown) fprintf(f, "| %-*s ", (int)w[c], v);
            else fprintf(f, "%s%-*s", c ? "  " : "", c == cols - 1 ? 0 : (int)w[c], v);
        }
        fprintf(f, "%s\n", markdown ? "|" : "");
        if (markdown && r == 0) {
            for (int c = 0; c < cols; c++) {
                fprintf(f, "|");
                for (size_t k = 0; k < w[c] + 2; k++) fputc('-', f);
            }
            fprintf(f, "|\n");
        }
    }
    free(w);
}

static void table_free(table *t) {
    for (size_t i = 0; i < (size_t)t->rows * (size_t)(t->n + 1); i++) free(t->cells[i]);
    free(t->cells);
}

static void compare_usage(void) {
    printf("usage: pgolf compare [--metric NAME] [--markdown] LOG...\n\n"
           "A table of training runs, one column per log: steps, ms/step, training time, the final\n"
           "val_bpb and val_loss (the last final_*sliding_window*_exact line, else the last\n"
           "final_*_roundtrip_exact, else the last final score line; --metric NAME picks the line by\n"
           "name, e.g. legal_ttt_exact), the artifact bytes (Total submission size), model_params, and\n"
           "every configuration key whose value differs between the runs (pgolf's `config` lines,\n"
           "PR #1392's Hyperparameters block, train_gpt.py's header lines).\n\n"
           "  --metric NAME   the final score line to report (default auto)\n"
           "  --markdown      a Markdown table instead of aligned text\n");
}

int cmd_compare(int argc, char **argv) {
    const char *metric = NULL;
    int markdown = 0;
    char **logs = xcalloc((size_t)argc + 1, sizeof(char *));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            compare_usage();
            free(logs);
            return 0;
        }
        if (!strcmp(a, "--metric")) {
            if (i + 1 >= argc) pg_die("compare: --metric needs a value");
            metric = argv[++i];
        } else if (!strcmp(a, "--markdown") || !strcmp(a, "--md")) markdown = 1;
        else if (a[0] == '-' && a[1]) pg_die("compare: unknown option '%s' (see `pgolf compare --help`)", a);
        else logs[n++] = argv[i];
    }
    if (n == 0) pg_die("compare: no log given (see `pgolf compare --help`)");
    runlog *runs = xcalloc((size_t)n, sizeof(runlog));
    load_logs("compare", n, logs, runs);
    char **lab = make_labels(n, runs);
    table t = {.n = n};
    char **v = xcalloc((size_t)n, sizeof(char *));
    char buf[64];
#define ROW(name, expr)                                                                            \
    do {                                                                                           \
        for (int i = 0; i < n; i++) {                                                              \
            const runlog *r = &runs[i];                                                            \
            (void)r;                                                                               \
            buf[0] = 0;                                                                            \
            expr;                                                                                  \
            v[i] = buf[0] ? xstrdup(buf) : NULL;                                                   \
        }                                                                                          \
        table_row(&t, name, v);                                                                    \
        for (int i = 0; i < n; i++) free(v[i]);                                                    \
    } while (0)
    table_row(&t, "run", lab);
    ROW("steps", snprintf(buf, sizeof(buf), "%ld/%ld%s", r->last_step, r->total_steps, r->stopped_early ? " (cap)" : ""));
    ROW("ms/step", if (!isnan(r->step_avg_ms)) snprintf(buf, sizeof(buf), "%.2f", r->step_avg_ms);
        else if (!isnan(r->train_time_ms) && r->last_step > 0) snprintf(buf, sizeof(buf), "%.2f", r->train_time_ms / (double)r->last_step));
    ROW("train_time_s", if (!isnan(r->train_time_ms)) snprintf(buf, sizeof(buf), "%.1f", r->train_time_ms / 1000));
    ROW("val_bpb", const rl_final *f = runlog_final(r, metric); if (f) snprintf(buf, sizeof(buf), "%.8f", f->val_bpb));
    ROW("val_loss", const rl_final *f = runlog_final(r, metric); if (f) snprintf(buf, sizeof(buf), "%.8f", f->val_loss));
    ROW("metric", const rl_final *f = runlog_final(r, metric); if (f) snprintf(buf, sizeof(buf), "%s", f->name));
    ROW("last_val_bpb", if (r->n_val) snprintf(buf, sizeof(buf), "%.4f", r->val[r->n_val - 1].bpb));
    ROW("artifact_bytes", if (r->total_bytes >= 0) snprintf(buf, sizeof(buf), "%lld", r->total_bytes));
    ROW("model_params", if (r->model_params >= 0) snprintf(buf, sizeof(buf), "%lld", r->model_params));
    ROW("seed", if (r->have_seed) snprintf(buf, sizeof(buf), "%lld", r->seed));

    /* configuration differences: keys logged by two or more runs whose values differ; a key is
     * looked up in upper case (pgolf's config, PR #1392's hyperparameters), then as train_gpt.py's
     * header logs it in lower case */
    int ndiff = 0;
    if (n > 1) {
        char **keys = NULL;
        size_t nk = 0;
        for (int i = 0; i < n; i++)
            for (size_t k = 0; k < runs[i].n_cfg; k++) {
                char up[256];
                snprintf(up, sizeof(up), "%s", runs[i].cfg[k].key);
                for (char *p = up; *p; p++)
                    if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 32);
                int seen = 0;
                for (size_t j = 0; j < nk && !seen; j++) seen = !strcmp(keys[j], up);
                if (!seen) {
                    keys = xrealloc(keys, (nk + 1) * sizeof(char *));
                    keys[nk++] = xstrdup(up);
                }
            }
        for (size_t j = 0; j < nk; j++) {
            const char *key = keys[j];
            if (ignored_key(key) || !strcmp(key, "SEED")) continue;
            const char **val = xcalloc((size_t)n, sizeof(char *));
            int have = 0, differ = 0;
            const char *first = NULL;
            for (int i = 0; i < n; i++) {
                val[i] = cfg_lookup(&runs[i], key);
                if (!val[i]) continue;
                have++;
                if (!first) first = val[i];
                else if (!same_value(first, val[i])) differ = 1;
            }
            if (have >= 2 && differ) {
                if (!ndiff++) {
                    for (int i = 0; i < n; i++) v[i] = NULL;
                    table_row(&t, "#config differences:", v);
                }
                for (int i = 0; i < n; i++) {
                    char sv[256];
                    if (val[i]) show_value(val[i], sv, sizeof(sv));
                    v[i] = val[i] ? xstrdup(sv) : NULL;
                }
                table_row(&t, key, v);
                for (int i = 0; i < n; i++) free(v[i]);
            }
            free(val);
        }
        for (size_t j = 0; j < nk; j++) free(keys[j]);
        free(keys);
    }
#undef ROW
    table_print(&t, markdown, stdout);
    if (n > 1 && !ndiff) printf("%sno configuration differences%s\n", markdown ? "\n" : "", "");
    table_free(&t);
    free(v);
    free_labels(n, lab);
    for (int i = 0; i < n; i++) runlog_free(&runs[i]);
    free(runs);
    free(logs);
    return 0;
}

/* ====================================================================================== submit */

static void submit_usage(void) {
    printf("usage: pgolf submit --name NAME --artifact FILE [options] LOG...\n\n"
           "Build a records-style submission folder OUT/DATE_NAME/ from the train logs of one or more\n"
           "seeds and the artifact: README.md, submission.json (the challenge's multi-seed schema:\n"
           "val_bpb/val_loss means and standard deviations, seeds, seed_results), the logs as\n"
           "train_seed<SEED>.log, pgolf_src.tar.xz (the artifact's code section, as counted), and the\n"
           "byte accounting (model + code vs 16,000,000). With --prev-scores, Welch's t-test of the new\n"
           "per-seed val_bpb against the previous record's: t, degrees of freedom, the one-sided\n"
           "p-value that the new mean is lower, the p-value that it is lower by 0.005 nats or more,\n"
           "and the improvement in bpb and in nats (see README: nats = bpb x val_loss/val_bpb).\n"
           "The folder is built under a temporary name and renamed into place; an existing folder\n"
           "is an error.\n\n"
           "  --name NAME          folder name part and submission name ([A-Za-z0-9._+-])\n"
           "  --artifact FILE      the submitted artifact (pgolf artifact; else give --code)\n"
           "  --code FILE          the code counted with a non-pgolf artifact (train_gpt.py)\n"
           "  --date YYYY-MM-DD    default: today (UTC)\n"
           "  --prev-scores LIST   the previous record's per-seed val_bpb, comma-separated\n"
           "  --prev-name TEXT     what the previous record is called (e.g. 'PR #549')\n"
           "  --out DIR            where DATE_NAME/ is created (default records/track_10min_16mb)\n"
           "  --metric NAME        the final score line (default: sliding-window exact, else\n"
           "                       roundtrip exact; see `pgolf compare --help`)\n"
           "  --author, --github-id, --blurb TEXT   submission.json fields (default empty)\n");
}

static int valid_date(const char *d) {
    int y, m, dd;
    char tail;
    if (strlen(d) != 10 || d[4] != '-' || d[7] != '-') return 0;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !(d[i] >= '0' && d[i] <= '9')) return 0;
    if (sscanf(d, "%4d-%2d-%2d%c", &y, &m, &dd, &tail) != 3) return 0;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || dd < 1 || dd > mdays[m - 1]) return 0;
    if (m == 2 && dd == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) return 0;
    return 1;
}

static double *parse_scores(const char *s, size_t *n) {
    double *v = NULL;
    *n = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        double x = strtod(p, &end);
        if (end == p || errno || !isfinite(x) || x <= 0) {
            free(v);
            pg_die("submit: --prev-scores: '%s' is not a comma-separated list of positive numbers", s);
        }
        v = xrealloc(v, (*n + 1) * sizeof(double));
        v[(*n)++] = x;
        while (*end == ' ') end++;
        if (!*end) break;
        if (*end != ',') {
            free(v);
            pg_die("submit: --prev-scores: '%s' is not a comma-separated list of positive numbers", s);
        }
        p = end + 1;
    }
    return v;
}

static void put_file(const char *dir, const char *name, const void *data, size_t len) {
    char err[PG_ERRLEN];
    char *p = path_join(dir, name);
    if (pg_write_file_atomic(p, data, len, err, sizeof(err)) != 0) {
        free(p);
        pg_die("submit: %s", err); /* which removes the half-built folder */
    }
    free(p);
}

static const char *fmt_opt(char *buf, size_t n, double x, const char *fmt) {
    if (isnan(x)) snprintf(buf, n, "null");
    else snprintf(buf, n, fmt, x);
    return buf;
}

int cmd_submit(int argc, char **argv) {
    const char *name = NULL, *date = NULL, *art_path = NULL, *code_path = NULL, *prev = NULL, *prev_name = NULL;
    const char *out = "records/track_10min_16mb", *metric = NULL, *author = "", *github = "", *blurb = "";
    char **logs = xcalloc((size_t)argc + 1, sizeof(char *));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            submit_usage();
            free(logs);
            return 0;
        }
        const char **dst = !strcmp(a, "--name")        ? &name
                           : !strcmp(a, "--date")      ? &date
                           : !strcmp(a, "--artifact")  ? &art_path
                           : !strcmp(a, "--code")      ? &code_path
                           : !strcmp(a, "--prev-scores") ? &prev
                           : !strcmp(a, "--prev-name") ? &prev_name
                           : !strcmp(a, "--out")       ? &out
                           : !strcmp(a, "--metric")    ? &metric
                           : !strcmp(a, "--author")    ? &author
                           : !strcmp(a, "--github-id") ? &github
                           : !strcmp(a, "--blurb")     ? &blurb
                                                       : NULL;
        if (dst) {
            if (i + 1 >= argc) pg_die("submit: %s needs a value", a);
            *dst = argv[++i];
        } else if (a[0] == '-' && a[1]) pg_die("submit: unknown option '%s' (see `pgolf submit --help`)", a);
        else logs[n++] = argv[i];
    }
    if (!name) pg_die("submit: --name is required (see `pgolf submit --help`)");
    if (!*name || strlen(name) > 120) pg_die("submit: --name must be 1 to 120 characters");
    for (const char *p = name; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("._+-", *p)))
            pg_die("submit: --name '%s': only letters, digits and . _ + - are allowed (it names a folder)", name);
    if (name[0] == '.') pg_die("submit: --name must not start with '.'");
    if (!art_path) pg_die("submit: --artifact is required (see `pgolf submit --help`)");
    if (n == 0) pg_die("submit: no log given (see `pgolf submit --help`)");
    char today[16];
    if (!date) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(today, sizeof(today), "%Y-%m-%d", &tm);
        date = today;
    } else if (!valid_date(date)) pg_die("submit: --date '%s' is not a date YYYY-MM-DD", date);
    size_t nprev = 0;
    double *prev_v = prev ? parse_scores(prev, &nprev) : NULL;

    /* the logs: one final score and one distinct seed each */
    runlog *runs = xcalloc((size_t)n, sizeof(runlog));
    load_logs("submit", n, logs, runs);
    const rl_final **fin = xcalloc((size_t)n, sizeof(*fin));
    for (int i = 0; i < n; i++) {
        fin[i] = runlog_final(&runs[i], metric);
        if (!fin[i]) {
            if (metric) pg_die("submit: %s: no final score line named '%s'", logs[i], metric);
            pg_die("submit: %s: no final score line (final_*_roundtrip_exact / final_*sliding_window*_exact): run not "
                   "finished or log truncated",
                   logs[i]);
        }
        if (strcmp(fin[i]->name, fin[0]->name))
            pg_die("submit: %s is scored by '%s' but %s by '%s': choose one line with --metric", logs[0], fin[0]->name,
                   logs[i], fin[i]->name);
        if (!runs[i].have_seed) pg_die("submit: %s: no seed logged (pgolf's 'config SEED=' or train_gpt.py's 'seed:N')", logs[i]);
        for (int j = 0; j < i; j++)
            if (runs[j].seed == runs[i].seed) pg_die("submit: %s and %s both ran seed %lld", logs[j], logs[i], runs[i].seed);
        if (runs[i].total_bytes < 0) pg_die("submit: %s: no 'Total submission size' line", logs[i]);
        if (runs[i].total_bytes > PGOLF_SIZE_CAP)
            pg_die("submit: %s: the run's artifact (%lld bytes) is over the %d-byte cap", logs[i], runs[i].total_bytes, PGOLF_SIZE_CAP);
        if (!(fin[i]->val_bpb > 0) || !(fin[i]->val_loss > 0) || !isfinite(fin[i]->val_bpb) || !isfinite(fin[i]->val_loss))
            pg_die("submit: %s:%d: final val_loss/val_bpb not positive finite numbers", logs[i], fin[i]->line);
    }

    /* the artifact: total = model + code */
    char err[PG_ERRLEN];
    long long total = 0, code = 0, model = 0;
    artifact art;
    int have_art = 0;
    if (artifact_is_artifact(art_path)) {
        if (artifact_read(art_path, &art, err, sizeof(err)) != 0) pg_die("submit: %s", err);
        have_art = 1;
        total = (long long)art.file_len;
        code = (long long)art.code_len;
        model = total - code;
        if (code_path) pg_die("submit: --code is for non-pgolf artifacts; %s carries its code", art_path);
    } else {
        struct stat st;
        if (stat(art_path, &st) != 0) pg_die("submit: %s: %s", art_path, strerror(errno));
        if (!S_ISREG(st.st_mode)) pg_die("submit: %s: not a regular file", art_path);
        if (!code_path) pg_die("submit: %s is not a pgolf artifact: give --code FILE (the code counted with it)", art_path);
        struct stat sc;
        if (stat(code_path, &sc) != 0) pg_die("submit: %s: %s", code_path, strerror(errno));
        model = (long long)st.st_size;
        code = (long long)sc.st_size;
        total = model + code;
    }
    if (total > PGOLF_SIZE_CAP)
        pg_die("submit: %s: %lld bytes (model %lld + code %lld) is over the %d-byte cap by %lld", art_path, total, model, code,
               PGOLF_SIZE_CAP, total - PGOLF_SIZE_CAP);
    int art_seed = -1;
    for (int i = 0; i < n; i++)
        if (runs[i].total_bytes == total) art_seed = i;

    /* statistics */
    double *bpb = xcalloc((size_t)n, sizeof(double)), *loss = xcalloc((size_t)n, sizeof(double));
    double ratio = 0, steps_mean = 0, avg_mean = 0, bytes_mean = 0;
    long long bytes_max = 0;
    int n_avg = 0;
    for (int i = 0; i < n; i++) {
        bpb[i] = fin[i]->val_bpb;
        loss[i] = fin[i]->val_loss;
        ratio += loss[i] / bpb[i] / n;
        steps_mean += (double)runs[i].last_step / n;
        double avg = !isnan(runs[i].step_avg_ms) ? runs[i].step_avg_ms
                     : (!isnan(runs[i].train_time_ms) && runs[i].last_step > 0) ? runs[i].train_time_ms / (double)runs[i].last_step
                                                                               : NAN;
        runs[i].step_avg_ms = avg;
        if (!isnan(avg)) avg_mean += avg, n_avg++;
        bytes_mean += (double)runs[i].total_bytes / n;
        if (runs[i].total_bytes > bytes_max) bytes_max = runs[i].total_bytes;
    }
    avg_mean = n_avg ? avg_mean / n_avg : NAN;
    double mean_bpb = stats_mean(bpb, (size_t)n), std_bpb = stats_std(bpb, (size_t)n);
    double mean_loss = stats_mean(loss, (size_t)n), std_loss = stats_std(loss, (size_t)n);
    /* ratio = val_loss/val_bpb = ln 2 * bytes/token: nats per token for one bit per byte */
    double prev_mean = NAN, prev_std = NAN, d_bpb = NAN, d_nats = NAN;
    welch_result w = {0}, w5 = {0};
    int have_w = 0;
    const double need_nats = 0.005;
    if (prev_v) {
        prev_mean = stats_mean(prev_v, nprev);
        prev_std = stats_std(prev_v, nprev);
        d_bpb = mean_bpb - prev_mean;
        d_nats = d_bpb * ratio;
        have_w = stats_welch(bpb, (size_t)n, prev_v, nprev, 0, &w) == 0 &&
                 stats_welch(bpb, (size_t)n, prev_v, nprev, need_nats / ratio, &w5) == 0;
    }

    /* build the folder under a temporary name beside its destination */
    if (pg_mkdirs(out, err, sizeof(err)) != 0) pg_die("submit: %s", err);
    char dirname[200];
    snprintf(dirname, sizeof(dirname), "%s_%s", date, name);
    char *final_dir = path_join(out, dirname);
    struct stat st;
    if (lstat(final_dir, &st) == 0) pg_die("submit: %s already exists (remove it or choose another --name/--date)", final_dir);
    char *tdir;
    {
        char tmpname[300];
        snprintf(tmpname, sizeof(tmpname), ".%s.tmp.%ld", dirname, (long)getpid());
        tdir = path_join(out, tmpname);
        if (pg_scratch_mkdir(tdir, 0) != 0) pg_die("submit: cannot create a folder in %s: %s", out, strerror(errno));
    }

    /* the logs, as train_seed<SEED>.log */
    char **copied = xcalloc((size_t)n, sizeof(char *));
    for (int i = 0; i < n; i++) {
        uint8_t *data;
        size_t len;
        if (pg_read_file(logs[i], &data, &len, err, sizeof(err)) != 0) pg_die("submit: %s", err);
        char nm[64];
        snprintf(nm, sizeof(nm), "train_seed%lld.log", runs[i].seed);
        put_file(tdir, nm, data, len);
        copied[i] = xstrdup(nm);
        free(data);
    }
    int have_src = have_art && art.code_codec.kind == CODEC_LZMA;
    if (have_src) put_file(tdir, "pgolf_src.tar.xz", art.code, art.code_len);

    /* submission.json */
    char b1[64];
    sbuf j = {0};
    sb_printf(&j, "{\n  \"author\": ");
    sb_json_str(&j, author);
    sb_printf(&j, ",\n  \"github_id\": ");
    sb_json_str(&j, github);
    sb_printf(&j, ",\n  \"name\": ");
    sb_json_str(&j, name);
    sb_printf(&j, ",\n  \"blurb\": ");
    sb_json_str(&j, blurb);
    sb_printf(&j, ",\n  \"date\": \"%s\",\n  \"track\": \"10min_16mb\",\n", date);
    sb_printf(&j, "  \"val_loss\": %.8f,\n  \"val_bpb\": %.8f,\n", mean_loss, mean_bpb);
    sb_printf(&j, "  \"val_loss_std\": %s,\n", fmt_opt(b1, sizeof(b1), std_loss, "%.8f"));
    sb_printf(&j, "  \"val_bpb_std\": %s,\n", fmt_opt(b1, sizeof(b1), std_bpb, "%.8f"));
    sb_printf(&j, "  \"val_bpb_method\": ");
    sb_json_str(&j, fin[0]->name);
    sb_printf(&j, ",\n  \"seeds\": [");
    for (int i = 0; i < n; i++) sb_printf(&j, "%s%lld", i ? ", " : "", runs[i].seed);
    sb_printf(&j, "],\n  \"seed_results\": {\n");
    for (int i = 0; i < n; i++) {
        sb_printf(&j, "    \"%lld\": {\n      \"val_loss\": %.8f,\n      \"val_bpb\": %.8f,\n      \"metric\": ", runs[i].seed,
                  loss[i], bpb[i]);
        sb_json_str(&j, fin[i]->name);
        sb_printf(&j, ",\n      \"artifact_bytes\": %lld,\n      \"steps\": %ld,\n      \"step_avg_ms\": %s,\n      \"log\": ",
                  runs[i].total_bytes, runs[i].last_step, fmt_opt(b1, sizeof(b1), runs[i].step_avg_ms, "%.2f"));
        sb_json_str(&j, copied[i]);
        sb_printf(&j, "\n    }%s\n", i + 1 < n ? "," : "");
    }
    sb_printf(&j, "  },\n");
    sb_printf(&j, "  \"artifact_bytes_mean\": %.0f,\n  \"artifact_bytes_max\": %lld,\n", bytes_mean, bytes_max);
    sb_printf(&j, "  \"bytes_total\": %lld,\n  \"bytes_model\": %lld,\n  \"bytes_code\": %lld,\n", total, model, code);
    sb_printf(&j, "  \"bytes_cap\": %d,\n", PGOLF_SIZE_CAP);
    sb_printf(&j, "  \"train_steps_mean\": %.2f,\n  \"step_avg_ms_mean\": %s,\n", steps_mean, fmt_opt(b1, sizeof(b1), avg_mean, "%.2f"));
    sb_printf(&j, "  \"nats_per_bpb\": %.8f", ratio);
    if (prev_v) {
        sb_printf(&j, ",\n  \"comparison_baseline\": ");
        sb_json_str(&j, prev_name ? prev_name : "");
        sb_printf(&j, ",\n  \"comparison_seed_val_bpb\": [");
        for (size_t i = 0; i < nprev; i++) sb_printf(&j, "%s%.8f", i ? ", " : "", prev_v[i]);
        sb_printf(&j, "],\n  \"comparison_val_bpb_mean\": %.8f,\n  \"comparison_val_bpb_std\": %s,\n", prev_mean,
                  fmt_opt(b1, sizeof(b1), prev_std, "%.8f"));
        sb_printf(&j, "  \"delta_bpb\": %.8f,\n  \"delta_nats\": %.8f", d_bpb, d_nats);
        if (have_w) {
            sb_printf(&j, ",\n  \"t_statistic\": %.4f,\n  \"welch_df\": %.4f,\n  \"p_value\": %.10g,\n", w.t, w.df, w.p_less);
            sb_printf(&j, "  \"t_statistic_0.005_nats\": %.4f,\n  \"p_value_0.005_nats\": %.10g", w5.t, w5.p_less);
        }
    }
    sb_printf(&j, ",\n  \"implementation\": \"pgolf\"\n}\n");
    put_file(tdir, "submission.json", j.s, j.n);
    free(j.s);

    /* README.md */
    sbuf m = {0};
    sb_printf(&m, "# %s\n\n", name);
    if (*blurb) sb_printf(&m, "%s\n\n", blurb);
    sb_printf(&m, "Trained and scored with pgolf (Parameter Golf in C). %d seed%s, val_bpb from the `%s` line%s of "
                  "each log.\n\n",
              n, n > 1 ? "s" : "", fin[0]->name, n > 1 ? "s" : "");
    sb_printf(&m, "**val_bpb %.8f", mean_bpb);
    if (n > 1) sb_printf(&m, " ± %.8f (mean ± sample std over %d seeds)", std_bpb, n);
    sb_printf(&m, "**, val_loss %.8f nats/token.\n\n", mean_loss);
    sb_printf(&m, "## Seeds\n\n| seed | val_loss | val_bpb | steps | ms/step | artifact bytes | log |\n"
                  "|---:|---:|---:|---:|---:|---:|---|\n");
    for (int i = 0; i < n; i++)
        sb_printf(&m, "| %lld | %.8f | %.8f | %ld | %s | %lld | [%s](%s) |\n", runs[i].seed, loss[i], bpb[i], runs[i].last_step,
                  fmt_opt(b1, sizeof(b1), runs[i].step_avg_ms, "%.2f"), runs[i].total_bytes, copied[i], copied[i]);
    if (n > 1) {
        sb_printf(&m, "| **mean** | %.8f | %.8f | %.0f | %s | %.0f | |\n", mean_loss, mean_bpb, steps_mean,
                  fmt_opt(b1, sizeof(b1), avg_mean, "%.2f"), bytes_mean);
        sb_printf(&m, "| **std** | %.8f | %.8f | | | | |\n", std_loss, std_bpb);
    }
    sb_printf(&m, "\nThe standard deviation is the sample one (divisor n - 1).\n\n");
    sb_printf(&m, "## Size\n\n| | bytes |\n|---|---:|\n| model (compressed, with the artifact header) | %lld |\n"
                  "| code | %lld |\n| **total** | **%lld** |\n| cap | %d |\n| headroom | %lld |\n\n",
              model, code, total, PGOLF_SIZE_CAP, (long long)PGOLF_SIZE_CAP - total);
    if (have_art)
        sb_printf(&m, "The artifact `%s` is one file holding the quantised, compressed model and pgolf's compressed "
                      "source code; its size is the total. %s",
                  strrchr(art_path, '/') ? strrchr(art_path, '/') + 1 : art_path,
                  have_src ? "`pgolf_src.tar.xz` here is its code section as stored (the counted code bytes): "
                             "`tar xJf pgolf_src.tar.xz && make` rebuilds the program. "
                           : "");
    else
        sb_printf(&m, "Model bytes are the size of `%s`, code bytes the size of `%s`. ", art_path, code_path);
    if (art_seed >= 0) sb_printf(&m, "It is the artifact of seed %lld (its log's total matches).\n\n", runs[art_seed].seed);
    else sb_printf(&m, "Its size matches none of the logs' `Total submission size` lines.\n\n");
    sb_printf(&m, "The largest artifact of the seeds is %lld bytes.\n\n", bytes_max);
    if (prev_v) {
        sb_printf(&m, "## Comparison with %s\n\n", prev_name ? prev_name : "the previous record");
        sb_printf(&m, "Previous per-seed val_bpb: ");
        for (size_t i = 0; i < nprev; i++) sb_printf(&m, "%s%.8f", i ? ", " : "", prev_v[i]);
        sb_printf(&m, " (mean %.8f", prev_mean);
        if (nprev > 1) sb_printf(&m, ", std %.8f", prev_std);
        sb_printf(&m, ").\n\n");
        sb_printf(&m, "| | bpb | nats/token |\n|---|---:|---:|\n| new mean - previous mean | %+.8f | %+.8f |\n\n", d_bpb, d_nats);
        sb_printf(&m, "nats = bpb x %.6f. val_bpb = val_loss / ln 2 x tokens/byte, so one bit per byte is "
                      "ln 2 x bytes/token = val_loss / val_bpb nats per token; the factor is the mean of "
                      "val_loss / val_bpb over the seeds' logs (it depends only on the tokenizer and the "
                      "validation text).\n\n",
                  ratio);
        if (have_w) {
            sb_printf(&m, "Welch's t-test (unequal variances) on the per-seed val_bpb, one-sided:\n\n"
                          "| H1 | t | df | p |\n|---|---:|---:|---:|\n");
            sb_printf(&m, "| new mean < previous mean | %.4f | %.2f | %.3g |\n", w.t, w.df, w.p_less);
            sb_printf(&m, "| new mean < previous mean - 0.005 nats (%.6f bpb) | %.4f | %.2f | %.3g |\n\n", need_nats / ratio,
                      w5.t, w5.df, w5.p_less);
            sb_printf(&m, "The challenge asks for an improvement of at least 0.005 nats at p < 0.01: %s.\n\n",
                      w5.p_less < 0.01 ? "**met**" : "**not met**");
        } else
            sb_printf(&m, "Welch's t-test needs at least two scores on each side and a nonzero spread; not computed.\n\n");
    }
    sb_printf(&m, "## Files\n\n- `submission.json`: the scores in the records' multi-seed schema\n");
    for (int i = 0; i < n; i++) sb_printf(&m, "- `%s`: the train log of seed %lld\n", copied[i], runs[i].seed);
    if (have_src) sb_printf(&m, "- `pgolf_src.tar.xz`: the source code counted in the artifact\n");
    /* how the first run was configured: the keys pgolf logged as not default */
    int nset = 0;
    for (size_t k = 0; k < runs[0].n_cfg; k++) {
        const rl_kv *kv = &runs[0].cfg[k];
        if (!kv->source[0] || !strcmp(kv->source, "default") || !strcmp(kv->key, "SEED") || ignored_key(kv->key)) continue;
        if (!nset++) sb_printf(&m, "\n## Configuration\n\nThe keys the runs set (from the first log; SEED varies):\n\n```\n");
        sb_printf(&m, "%s=%s\n", kv->key, kv->value);
    }
    if (nset) sb_printf(&m, "```\n");
    put_file(tdir, "README.md", m.s, m.n);
    free(m.s);

    /* into place */
    if (rename(tdir, final_dir) != 0) pg_die("submit: cannot rename %s to %s: %s", tdir, final_dir, strerror(errno));
    pg_cleanup_drop(tdir); /* only now: until the rename a signal removes the half-built folder */
    free(tdir);
    printf("submit: wrote %s (%d seed%s, val_bpb %.8f", final_dir, n, n > 1 ? "s" : "", mean_bpb);
    if (n > 1) printf(" ± %.8f", std_bpb);
    printf(", %lld bytes)\n", total);
    if (have_w) printf("submit: vs previous: %+.8f bpb, %+.8f nats, Welch t=%.4f df=%.2f p=%.3g (0.005 nats: p=%.3g)\n", d_bpb,
                       d_nats, w.t, w.df, w.p_less, w5.p_less);

    for (int i = 0; i < n; i++) free(copied[i]);
    free(copied);
    if (have_art) artifact_free(&art);
    free(final_dir);
    free(bpb);
    free(loss);
    free(prev_v);
    free(fin);
    for (int i = 0; i < n; i++) runlog_free(&runs[i]);
    free(runs);
    free(logs);
    return 0;
}
