/* train.c: `pgolf train`, the C counterpart of train_gpt.py's main(): configuration from the
 * environment (and an optional preset file), data, model, optimizers, the wallclock-capped
 * training loop with periodic validation, then export to the artifact, reload and the roundtrip
 * score. Log lines keep train_gpt.py's formats (spec §2.10) on stdout and in logs/$RUN_ID.txt. */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "cmds.h"
#include "common.h"
#include "config.h"
#include "data.h"
#include "dist.h"
#include "eval.h"
#include "export_run.h"
#include "model.h"
#include "optim.h"
#include "quant.h"
#include "tools.h"

/* ---- logging (rank 0): console and logs/$RUN_ID.txt ---- */
static FILE *g_logfile;
static int g_master = 1;

/* the live progress line (terminal only): shown after training steps, erased before log lines */
static int g_tty = -1;   /* stdout is a terminal (-1: not checked yet) */
static int g_progress_shown;
static double g_progress_t;

static void progress_clear(void) {
    if (g_progress_shown) {
        fputs("\r\033[K", stdout);
        g_progress_shown = 0;
    }
}

static void fmt_dur(char *b, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(b, n, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
    else if (t >= 60) snprintf(b, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(b, n, "%lds", t);
}

static void log_line(int console, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(int console, const char *fmt, ...) {
    if (!g_master) return;
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (console) {
        progress_clear();
        fputs(buf, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (g_logfile) {
        fputs(buf, g_logfile);
        fputc('\n', g_logfile);
        fflush(g_logfile);
    }
}
static void log_cfg(const char *line, void *ctx) {
    (void)ctx;
    log_line(0, "%s", line);
}

/* SIGINT/SIGTERM/SIGUSR1: finish the current step, write a checkpoint, exit. (mpirun passes SIGUSR1
 * on to every rank; on SIGTERM it ends the job itself after a short grace period.) */
static volatile sig_atomic_t g_stop_signal;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

/* Which weights are exported (PGOLF_EXPORT_WEIGHTS). auto: the EMA when kept, else the SWA mean of
 * more than one sample (PR #315), else the raw weights. best (PR #1311 §2.6): the raw weights, then
 * the EMA, then the SWA mean are scored by the standard eval, each kept only if its val_bpb is
 * lower than the best so far; the record's log lines. Averages are cast to each parameter's
 * state-dict dtype as they are loaded into m; ev (an evaluator of m's weights) scores them. */
static void select_export_weights(const pg_config *cfg, gpt_model *m, gpt_model *ev, const weight_avg *avg, long steps,
                                  const uint16_t *val, size_t usable, int T, int B_val, int rank, int world,
                                  const bpb_luts *luts) {
    const char *mode = cfg->export_weights;
    const int have_swa = avg->swa && avg->swa_count > 1;
    /* an EMA that starts after update EMA_START_STEP holds nothing when the run stopped before it */
    const int have_ema = avg->ema && (cfg->ema_start_step == 0 || steps >= cfg->ema_start_step);
    if (!strcmp(mode, "raw")) return;
    if (avg->ema && !have_ema && strcmp(mode, "best") && strcmp(mode, "swa"))
        log_line(1, "ema:not started (training too short: %ld steps, EMA_START_STEP=%lld)", steps,
                 (long long)cfg->ema_start_step);
    if (!strcmp(mode, "auto") || !strcmp(mode, "ema") || !strcmp(mode, "swa")) {
        if (have_ema && strcmp(mode, "swa")) {
            log_line(1, "ema:applying EMA weights");
            gpt_load_averaged(m, avg->ema, 1);
        } else if (have_swa && strcmp(mode, "ema")) {
            log_line(1, "swa:applying averaged %d checkpoints", avg->swa_count);
            gpt_load_averaged(m, avg->swa, avg->swa_count);
        } else if (!strcmp(mode, "swa"))
            log_line(1, "swa:fewer than 2 samples (%d), keeping the raw weights", avg->swa_count);
        return;
    }
    /* best */
    const pg_ops *ops = m->ops;
    const size_t bytes = m->n_floats * sizeof(float);
    float *keep = xmalloc(bytes); /* the best weights so far (host) */
    ops->to_host(keep, m->w, bytes);
    eval_result er;
    double t = pg_now();
    eval_val(ev, val, usable, T, B_val, rank, world, luts, &er, NULL);
    log_line(1, "raw_model val_loss:%.4f val_bpb:%.4f t:%.0fms", er.val_loss, er.val_bpb, 1000.0 * (pg_now() - t));
    double best = er.val_bpb;
    const char *src = "raw";
    if (have_ema) {
        gpt_load_averaged(m, avg->ema, 1);
        t = pg_now();
        eval_val(ev, val, usable, T, B_val, rank, world, luts, &er, NULL);
        log_line(1, "post_ema val_loss:%.4f val_bpb:%.4f t:%.0fms", er.val_loss, er.val_bpb, 1000.0 * (pg_now() - t));
        if (er.val_bpb < best) {
            best = er.val_bpb;
            src = "ema";
            ops->to_host(keep, m->w, bytes);
        } else {
            ops->to_device(m->w, keep, bytes);
            gpt_sync_weights(m);
            log_line(1, "ema:worse, reverting to raw");
        }
    } else
        log_line(1, "ema:not started (training too short)");
    if (have_swa) {
        gpt_load_averaged(m, avg->swa, avg->swa_count);
        t = pg_now();
        eval_val(ev, val, usable, T, B_val, rank, world, luts, &er, NULL);
        log_line(1, "post_swa val_loss:%.4f val_bpb:%.4f (n=%d) t:%.0fms", er.val_loss, er.val_bpb, avg->swa_count,
                 1000.0 * (pg_now() - t));
        if (er.val_bpb < best) {
            best = er.val_bpb;
            src = "swa";
            log_line(1, "swa:better, using swa");
        } else {
            ops->to_device(m->w, keep, bytes);
            gpt_sync_weights(m);
            log_line(1, "swa:worse (%.4f>%.4f), keeping %s", er.val_bpb, best, src);
        }
    }
    log_line(1, "best_model:%s val_bpb:%.4f", src, best);
    free(keep);
}

/* several processes: every rank takes rank 0's weights (dist.h) */
static void weights_from_rank0(gpt_model *m) {
    if (dist_world() <= 1) return;
    float *p[1] = {m->w};
    size_t n[1] = {m->n_floats};
    int root[1] = {0};
    dist_bcast_many(m->ops, p, n, root, 1);
    gpt_sync_weights(m);
}

/* One step's gradients: this rank's micro-batches, then the sums across ranks (the last
 * micro-batch's backward overlapping them) and the clipping to max_norm (optim_grads_begin/end;
 * the priming steps do not clip, as train_gpt.py). Returns the summed micro-batch losses. */
static double step_gradients(gpt_model *m, optimizer *o, const pg_config *c, batch_loader *ld, int32_t *xb, int32_t *yb,
                             int B, float grad_scale, double max_norm) {
    const int grad_accum = config_grad_accum(c);
    char err[PG_ERRLEN];
    double loss = 0;
    gpt_zero_grad(m);
    for (int micro = 0; micro < grad_accum; micro++) {
        if (loader_next(ld, c->train_batch_tokens, grad_accum, xb, yb, err, sizeof(err)) != 0) pg_die("%s", err);
        if (micro == grad_accum - 1) optim_grads_begin(o, c);
        loss += gpt_forward_backward(m, xb, yb, B, grad_scale, NULL);
    }
    optim_grads_end(o, c, max_norm);
    return loss;
}

/* step, tokens/s, MFU (GPU: gpt_train_flops_per_token against the device's bf16 peak), elapsed, ETA
 * (to the wallclock cap, or to the last step at the mean step time), peak memory; at most 5 times a
 * second, only when stdout is a terminal. */
static void progress_show(const pg_config *c, const pg_ops *ops, long step, double train_ms, double tokens_per_step,
                          double flops_per_token, double peak_flops) {
    /* not under MPI: its launchers hand each rank a pseudo-terminal even when the output goes to a file */
    if (g_tty < 0) g_tty = isatty(STDOUT_FILENO) && dist_world() == 1 && !getenv("OMPI_COMM_WORLD_SIZE");
    if (!g_tty || !g_master) return;
    double now = pg_now();
    if (now - g_progress_t < 0.2 && step < c->iterations) return;
    g_progress_t = now;
    const double step_s = train_ms / 1000.0 / (double)(step > 0 ? step : 1);
    double eta = (double)(c->iterations - step) * step_s;
    const char *to = "last step";
    const double cap_s = config_train_cap_seconds(c);
    if (cap_s > 0 && cap_s - train_ms / 1000.0 < eta) {
        eta = fmax(cap_s - train_ms / 1000.0, 0.0);
        to = "cap";
    }
    char el[32], et[32];
    fmt_dur(el, sizeof(el), train_ms / 1000.0);
    fmt_dur(et, sizeof(et), eta);
    size_t mem = ops->peak_bytes() >> 20;
    if (mem == 0) mem = pg_peak_rss_mib();
    char mfu[32] = "";
    if (peak_flops > 0) /* all ranks' tokens over all ranks' peak */
        snprintf(mfu, sizeof(mfu), " | MFU %.1f%%", 100.0 * tokens_per_step / step_s * flops_per_token / (peak_flops * dist_world()));
    printf("\r\033[K[pgolf] step %ld/%lld | %.1fk tok/s%s | %.1f ms/step | elapsed %s | eta %s (%s) | peak %zu MiB", step,
           (long long)c->iterations, tokens_per_step / step_s / 1000.0, mfu, 1000.0 * step_s, el, et, to, mem);
    fflush(stdout);
    g_progress_shown = 1;
}

static void usage(void) {
    printf("usage: pgolf train [PRESET.env]\n\n"
           "Trains the model configured by train_gpt.py's environment variables (a preset file of\n"
           "KEY=VALUE lines supplies defaults; the environment overrides it), then quantises, compresses\n"
           "and writes the artifact, reloads it and prints the roundtrip val_bpb.\n\n");
    config_print_help();
}

int cmd_train(int argc, char **argv) {
    const char *preset = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return 0;
        }
        if (argv[i][0] == '-') pg_die("train: unknown option '%s' (see `pgolf train --help`)", argv[i]);
        if (preset) pg_die("train: more than one preset given ('%s', '%s')", preset, argv[i]);
        preset = argv[i];
    }
    dist_init(); /* under mpirun: RANK, WORLD_SIZE, LOCAL_RANK from MPI (dist.h) */
    pg_config cfg;
    config_resolve(&cfg, preset);
    char err[PG_ERRLEN];
    const int rank = (int)cfg.rank, world = (int)cfg.world_size;
    const int grad_accum = config_grad_accum(&cfg);
    g_master = rank == 0;
    const int T = (int)cfg.train_seq_len;
    const int B_train = (int)(cfg.train_batch_tokens / (world * grad_accum) / T);
    const int B_val = (int)(cfg.val_batch_size / (world * grad_accum) / T);

    const pg_ops *ops = backend_select(cfg.backend);
    /* tokenizer + validation metric setup */
    bpb_luts luts;
    if (bpb_luts_load(&luts, cfg.tokenizer_path, (int)cfg.vocab_size, err, sizeof(err)) != 0) pg_die("%s", err);
    char train_pat[4096], val_pat[4096];
    snprintf(train_pat, sizeof(train_pat), "%s/fineweb_train_*.bin", cfg.data_path);
    snprintf(val_pat, sizeof(val_pat), "%s/fineweb_val_*.bin", cfg.data_path);
    uint16_t *val = NULL;
    size_t val_total = 0, usable = 0;
    if (val_tokens_load(val_pat, (int)cfg.vocab_size, T, &val, &val_total, &usable, err, sizeof(err)) != 0)
        pg_die("%s", err);
    /* every training shard's header is checked here, before any output exists */
    batch_loader loader;
    if (loader_open(&loader, train_pat, (int)cfg.vocab_size, rank, world, err, sizeof(err)) != 0) pg_die("%s", err);
    const int n_train = loader.stream.n_files;

    /* output locations must be writable before hours of training (rank 0 writes them) */
    if (g_master) {
        if (pg_mkdirs(cfg.out_dir, err, sizeof(err)) != 0) pg_die("PGOLF_OUT_DIR: %s", err);
        if (export_check_writable(cfg.out_dir, err, sizeof(err)) != 0) pg_die("%s", err);
    }
    /* every rank has opened its data; now all must agree on the configuration (and take rank 0's RUN_ID) */
    dist_check_config(&cfg);

    /* model + optimizer */
    /* a validation batch larger than the training micro-batch goes to an evaluator of the same
     * weights when that takes less memory than a training build of the larger batch (it keeps one
     * set of activations and no gradients); otherwise the model scores itself. Same scores either way. */
    const int B_model = B_train > B_val ? B_train : B_val;
    const int use_ev = B_val > B_train && gpt_build_bytes(&cfg, ops, B_train, T, GPT_TRAINING) +
                                                  gpt_build_bytes(&cfg, ops, B_val, T, GPT_EVALUATOR_SHARED) <
                                              gpt_build_bytes(&cfg, ops, B_model, T, GPT_TRAINING);
    gpt_model model, eval_model, *ev = &model;
    gpt_build(&model, &cfg, ops, use_ev ? B_train : B_model, T);
    if (use_ev) {
        gpt_build_eval(&eval_model, &cfg, ops, B_val, T, &model);
        ev = &eval_model;
    }
    if (cfg.init_from[0]) {
        statedict sd;
        if (safetensors_read_records(cfg.init_from, &sd, err, sizeof(err)) != 0) pg_die("INIT_FROM: %s", err);
        if (gpt_from_statedict(&model, &sd, cfg.init_from, err, sizeof(err)) != 0) pg_die("INIT_FROM: %s", err);
        sd_free(&sd);
    } else
        gpt_init(&model, &cfg, (uint64_t)cfg.seed);
    weights_from_rank0(&model); /* every rank starts from rank 0's weights */
    optimizer opt;
    optim_init(&opt, &model);
    /* EMA / SWA of the weights (spec PR315 §4.6), fp32 in backend memory */
    weight_avg avg;
    wavg_init(&avg, ops, &cfg, model.n_floats);
    char ckpt_path[4096];
    if (cfg.checkpoint_path[0]) snprintf(ckpt_path, sizeof(ckpt_path), "%s", cfg.checkpoint_path);
    else snprintf(ckpt_path, sizeof(ckpt_path), "%s/%s.ckpt", cfg.out_dir, cfg.run_id);
    ckpt_progress prog = {.step = 0, .training_ms = 0, .stop_after = -1};
    if (cfg.resume[0]) {
        if (ckpt_load(cfg.resume, &cfg, &model, &opt, avg.ema, avg.swa, &prog, err, sizeof(err)) != 0) pg_die("RESUME: %s", err);
        if (stream_seek(&loader.stream, prog.stream_file, prog.stream_pos, err, sizeof(err)) != 0)
            pg_die("RESUME: %s: %s", cfg.resume, err);
        if (cfg.priming_keeps_adam) opt.mom_offset = cfg.warmup_steps; /* the kept priming steps */
    }
    char logpath[4096];
    if (g_master) {
        if (pg_mkdirs(cfg.log_dir, err, sizeof(err)) != 0) pg_die("PGOLF_LOG_DIR: %s", err);
        snprintf(logpath, sizeof(logpath), "%s/%s.txt", cfg.log_dir, cfg.run_id);
        g_logfile = fopen(logpath, "a");
        if (!g_logfile) pg_die("%s: cannot open log file for writing", logpath);
        printf("%s\n", logpath);
    }
    log_line(0, "pgolf train: backend %s", ops->name);
    config_dump(&cfg, log_cfg, NULL);
    log_line(0, "====================================================================================================");

    const char *dsname = strrchr(cfg.data_path, '/');
    dsname = dsname && dsname[1] ? dsname + 1 : cfg.data_path;
    log_line(1, "val_bpb:enabled tokenizer_kind=sentencepiece tokenizer_path=%s", cfg.tokenizer_path);
    log_line(1, "train_loader:dataset:%s train_shards:%d", dsname, n_train);
    log_line(1, "val_loader:shards pattern=%s tokens:%zu", val_pat, usable);

    log_line(1, "model_params:%zu", gpt_param_count(&model));
    log_line(1, "world_size:%d grad_accum_steps:%d", world, grad_accum);
    log_line(1, "sdp_backends:pgolf=%s", ops->name);
    log_line(1, "attention_mode:gqa num_heads:%d num_kv_heads:%d", model.H, model.Hk);
    log_line(1, "tie_embeddings:%s embed_lr:%g head_lr:%g matrix_lr:%g scalar_lr:%g", cfg.tie_embeddings ? "True" : "False",
             optim_base_lr(&cfg, GROUP_TOKEN), cfg.tie_embeddings ? 0.0 : cfg.head_lr, cfg.matrix_lr, cfg.scalar_lr);
    log_line(1, "train_batch_tokens:%lld train_seq_len:%d iterations:%lld warmup_steps:%lld max_wallclock_seconds:%.3f",
             (long long)cfg.train_batch_tokens, T, (long long)cfg.iterations, (long long)cfg.warmup_steps,
             cfg.max_wallclock_seconds);
    log_line(1, "seed:%lld", (long long)cfg.seed);

    const size_t local_tokens = (size_t)B_train * T;
    int32_t *xb = xmalloc(local_tokens * sizeof(int32_t)), *yb = xmalloc(local_tokens * sizeof(int32_t));
    /* each rank's micro-batches carry 1/(grad_accum*world) of the step; the ranks' gradients are summed */
    const float grad_scale = 1.0f / (float)(grad_accum * world);

    /* priming steps, then restore the initial state (train_gpt.py's compile warmup) */
    if (cfg.resume[0])
        log_line(1, "resume:%s step:%ld train_time:%.0fms", cfg.resume, prog.step, prog.training_ms);
    if (cfg.warmup_steps > 0 && !cfg.resume[0]) {
        float *snap = xmalloc(model.n_floats * sizeof(float));
        ops->to_host(snap, model.w, model.n_floats * sizeof(float));
        for (long ws = 0; ws < cfg.warmup_steps; ws++) {
            step_gradients(&model, &opt, &cfg, &loader, xb, yb, B_train, grad_scale, 0.0);
            optim_step(&opt, &cfg, 1.0);
            if (cfg.warmup_steps <= 20 || (ws + 1) % 10 == 0 || ws + 1 == cfg.warmup_steps)
                log_line(1, "warmup_step:%ld/%lld", ws + 1, (long long)cfg.warmup_steps);
        }
        ops->to_device(model.w, snap, model.n_floats * sizeof(float));
        gpt_sync_weights(&model);
        free(snap);
        if (cfg.priming_keeps_adam) optim_keep_adam_after_priming(&opt);
        else optim_reset(&opt);
        loader_close(&loader);
        if (loader_open(&loader, train_pat, (int)cfg.vocab_size, rank, world, err, sizeof(err)) != 0) pg_die("%s", err);
    }

    /* the EMA starts from the initial weights (after the priming restore) unless told to start later */
    if (!cfg.resume[0]) wavg_begin(&avg, &cfg, model.w);

    /* MFU on the progress line: the GPU's bf16 peak (none on the CPU) */
    const double flops_per_token = gpt_train_flops_per_token(&model);
    double peak_flops = 0;
#ifdef PGOLF_CUDA
    if (ops == &pg_cuda_ops) peak_flops = pg_cuda_peak_flops();
#endif
    /* main training loop */
    const double cap_ms = 1000.0 * config_train_cap_seconds(&cfg); /* <= 0: no cap */
    if (cfg.max_wallclock_seconds > 0 && cfg.gptq_reserve_seconds > 0)
        log_line(1, "gptq:reserving %.0fs, effective=%.0fms", cfg.gptq_reserve_seconds, cap_ms);
    double training_ms = prog.training_ms;
    avg.swa_count = prog.swa_count;
    long stop_after = prog.stop_after;
    long step = prog.step;
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    signal(SIGUSR1, on_stop_signal);
    ops->sync();
    double t0 = pg_now();
    eval_result er;
    while (1) {
        int last = step == cfg.iterations || (stop_after >= 0 && step >= stop_after);
        int do_val = last || (cfg.val_loss_every > 0 && step % cfg.val_loss_every == 0);
        if (do_val) {
            ops->sync();
            training_ms += 1000.0 * (pg_now() - t0);
            eval_val(ev, val, usable, T, B_val, rank, world, &luts, &er, NULL);
            log_line(1, "step:%ld/%lld val_loss:%.4f val_bpb:%.4f train_time:%.0fms step_avg:%.2fms", step,
                     (long long)cfg.iterations, er.val_loss, er.val_bpb, training_ms,
                     training_ms / (double)(step > 1 ? step : 1));
            ops->sync();
            t0 = pg_now();
        }
        if (last) {
            if (stop_after >= 0 && step < cfg.iterations)
                log_line(1, "stopping_early: wallclock_cap train_time:%.0fms step:%ld/%lld", training_ms, step,
                         (long long)cfg.iterations);
            break;
        }
        double elapsed_ms = training_ms + 1000.0 * (pg_now() - t0);
        dist_max_f64(&elapsed_ms, 1); /* one clock for every rank: the slowest's */
        double mult = optim_lr_mul(&cfg, step, elapsed_ms);
        int switched = gpt_step_begin(&model, step, mult); /* the records' mid-run switches */
        if (switched & GPT_SWITCHED_LATE_QAT) {
            log_line(1, "late_qat:enabled step:%ld scale:%.4f", step, mult);
            if (!model.late_active) log_line(1, "late_qat:inert as in the records (PGOLF_LATE_QAT_ACTIVE=0)");
        }
        if (switched & GPT_SWITCHED_RECUR) log_line(1, "depth_recurrence:enabled step:%ld", step);
        double train_loss = step_gradients(&model, &opt, &cfg, &loader, xb, yb, B_train, grad_scale, cfg.grad_clip_norm);
        dist_sum_f64(&train_loss, 1);
        train_loss /= grad_accum * world; /* the mean over the whole batch (train_gpt.py logs rank 0's share) */
        if (!isfinite(train_loss)) {
            if (step > 0 && cfg.checkpoint_every > 0)
                pg_die("train_loss is %f at step %ld: training diverged (lower the learning rates?); the last good "
                       "checkpoint is %s", train_loss, step + 1, ckpt_path);
            pg_die("train_loss is %f at step %ld: training diverged (lower the learning rates?)", train_loss, step + 1);
        }
        optim_step(&opt, &cfg, mult);
        step++;
        if (wavg_after_step(&avg, &cfg, model.w, step, mult)) log_line(1, "swa:start step:%ld", step);
        ops->sync();
        /* the slowest rank's clock and any rank's stop signal decide for all, so all stop together */
        double clk[2] = {training_ms + 1000.0 * (pg_now() - t0), (double)g_stop_signal};
        dist_max_f64(clk, 2);
        double approx_ms = clk[0];
        if (cfg.train_log_every > 0 && (step <= 10 || step % cfg.train_log_every == 0 || stop_after >= 0))
            log_line(1, "step:%ld/%lld train_loss:%.4f train_time:%.0fms step_avg:%.2fms", step, (long long)cfg.iterations,
                     train_loss, approx_ms, approx_ms / (double)step);
        progress_show(&cfg, ops, step, approx_ms, (double)cfg.train_batch_tokens, flops_per_token, peak_flops);
        int reached = cap_ms > 0 && approx_ms >= cap_ms;
        if (stop_after < 0 && reached) stop_after = step;
        int sig = (int)clk[1];
        if (sig || (cfg.checkpoint_every > 0 && step % cfg.checkpoint_every == 0)) {
            optim_share_state(&opt, &cfg); /* rank 0 gathers the Muon buffers the other ranks keep */
            ops->sync();
            ckpt_progress cp = {.step = step,
                                .training_ms = training_ms + 1000.0 * (pg_now() - t0),
                                .stop_after = stop_after,
                                .stream_file = loader.stream.file_idx,
                                .stream_pos = loader.stream.pos};
            double ts = pg_now();
            cp.swa_count = avg.swa_count;
            if (g_master && ckpt_save(ckpt_path, &cfg, &model, &opt, avg.ema, avg.swa, &cp, err, sizeof(err)) != 0)
                pg_die("%s", err);
            t0 += pg_now() - ts; /* writing checkpoints is not training time */
            if (sig) {
                log_line(1, "interrupted:signal %d at step:%ld checkpoint:%s (resume with RESUME=%s)", sig, step,
                         ckpt_path, ckpt_path);
                if (g_logfile) fclose(g_logfile);
                dist_finalize();
                exit(128 + sig);
            }
            log_line(0, "checkpoint:%s step:%ld", ckpt_path, step);
        }
    }
    size_t peak_dev = ops->peak_bytes() >> 20;
    log_line(1, "peak memory allocated: %zu MiB reserved: %zu MiB", peak_dev, pg_peak_rss_mib());
    loader_close(&loader);
    free(xb);
    free(yb);
    /* the final model evaluates with depth recurrence on, as the records' eval model (PR #1392) */
    if (model.recur_n > 0 && !model.recur_on) {
        model.recur_on = 1;
        log_line(1, "depth_recurrence:enabled for the final model");
    }
    select_export_weights(&cfg, &model, ev, &avg, step, val, usable, T, B_val, rank, world, &luts);
    wavg_free(&avg);

    /* serialization + roundtrip validation */
    export_run ex = {.cfg = &cfg, .model = &model, .log = log_line};
    int rc = g_master ? export_and_roundtrip(&ex) : 0; /* rank 0 packs, writes and reloads */
    dist_bcast_host(&rc, sizeof(rc), 0);
    if (rc == 0) weights_from_rank0(&model); /* every rank scores the reloaded weights */
    if (rc == 0) {
        eval_val(ev, val, usable, T, B_val, rank, world, &luts, &er, NULL);
        log_line(1, "final_%s_roundtrip val_loss:%.4f val_bpb:%.4f eval_time:%.0fms", ex.label_short, er.val_loss,
                 er.val_bpb, 1000.0 * (pg_now() - ex.t_eval_start));
        log_line(1, "final_%s_roundtrip_exact val_loss:%.8f val_bpb:%.8f", ex.label_short, er.val_loss, er.val_bpb);
        if (cfg.eval_stride > 0) {
            const sw_style st = (sw_style)sw_style_parse(cfg.sw_style);
            const int s = (int)cfg.eval_stride;
            double ts = pg_now();
            eval_sliding(ev, val, usable, s, (int)cfg.sw_eval_batch, st, cfg.eval_temperature, rank, world, &luts, &er);
            double ms = 1000.0 * (pg_now() - ts);
            quant_scheme qs = QS_INT8_BASELINE;
            quant_scheme_parse(cfg.quant_scheme, &qs, err, sizeof(err)); /* validated by the export */
            if (st == SW_PR65) { /* PR #65's lines */
                log_line(1, "final_sliding_window_eval stride:%d val_loss:%.4f val_bpb:%.4f eval_time:%.0fms", s,
                         er.val_loss, er.val_bpb, ms);
                log_line(1, "final_sliding_window_eval_exact stride:%d val_loss:%.8f val_bpb:%.8f", s, er.val_loss,
                         er.val_bpb);
            } else if (qs == QS_INT6_PR187) { /* PR #187's lines */
                log_line(1, "final_sliding_window val_loss:%.4f val_bpb:%.4f stride:%d eval_time:%.0fms", er.val_loss,
                         er.val_bpb, s, ms);
                log_line(1, "final_sliding_window_exact val_loss:%.8f val_bpb:%.8f", er.val_loss, er.val_bpb);
            } else { /* PR #315's lines (also PR #1392's) */
                log_line(1, "final_%s_sliding_window val_loss:%.4f val_bpb:%.4f stride:%d eval_time:%.0fms",
                         ex.label_short, er.val_loss, er.val_bpb, s, ms);
                log_line(1, "final_%s_sliding_window_exact val_loss:%.8f val_bpb:%.8f", ex.label_short, er.val_loss,
                         er.val_bpb);
            }
            /* PR #315 / #453 add a stride-64 sliding eval when EVAL_STRIDE is another stride (spec §4.9) */
            if ((qs == QS_INT6_PR315 || qs == QS_INT6_PR453) && s != 64 && 64 <= T) {
                eval_result e64;
                ts = pg_now();
                eval_sliding(ev, val, usable, 64, (int)cfg.sw_eval_batch, st, cfg.eval_temperature, rank, world,
                             &luts, &e64);
                log_line(1, "final_%s_sliding_window_s64 val_loss:%.4f val_bpb:%.4f stride:64 eval_time:%.0fms",
                         ex.label_short, e64.val_loss, e64.val_bpb, 1000.0 * (pg_now() - ts));
                log_line(1, "final_%s_sliding_window_s64_exact val_loss:%.8f val_bpb:%.8f", ex.label_short,
                         e64.val_loss, e64.val_bpb);
            }
            /* PR #1311 and PR #1392 end by echoing the sliding score under the baseline's name */
            if (qs == QS_INT6_GPTQ_LITE || qs == QS_INT6_GPTQ)
                log_line(1, "final_int8_zlib_roundtrip_exact val_loss:%.8f val_bpb:%.8f", er.val_loss, er.val_bpb);
        }
    }
    optim_free(&opt);
    if (ev != &model) gpt_free(ev);
    gpt_free(&model);
    bpb_luts_free(&luts);
    free(val);
    int over = ex.total_bytes > PGOLF_SIZE_CAP && !cfg.non_record;
    if (g_logfile) fclose(g_logfile);
    g_logfile = NULL;
    if (rc == 0 && cfg.plot[0] && g_master) { /* PGOLF_PLOT: this run's curves */
        size_t pl = strlen(cfg.plot);
        int svg = pl > 4 && !strcmp(cfg.plot + pl - 4, ".svg");
        char *lp = logpath;
        if (tools_plot(1, &lp, svg ? NULL : cfg.plot, svg ? cfg.plot : NULL, "both", err, sizeof(err)) != 0) {
            fprintf(stderr, "pgolf: error: PGOLF_PLOT: %s\n", err);
            rc = 1;
        } else
            printf("plot:%s\n", cfg.plot);
    }
    config_free(&cfg);
    dist_finalize();
    if (rc != 0) return 1;
    if (over)
        pg_die("artifact total %zu bytes is over the %d-byte cap (set PGOLF_NON_RECORD=1 for a non-record run)",
               ex.total_bytes, PGOLF_SIZE_CAP);
    return 0;
}
