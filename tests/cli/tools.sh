#!/usr/bin/env bash
# tools.sh: `pgolf plot`, `pgolf compare` and `pgolf submit` on the example logs of
# tests/data/logs (pgolf's own logs of tiny runs, and logs written in the formats of the challenge
# records' train_gpt.py and PR #1392 logs): the images are a valid PNG (signature, IHDR size) and
# a well-formed SVG; the table holds the logged numbers; the submission folder's mean, sample
# standard deviation, Welch t, degrees of freedom and p-values match an independent computation in
# Python (and the closed-form Student-t CDF for 4 degrees of freedom); malformed and truncated
# logs, bad options and over-cap artifacts give one error line, a non-zero status and no output.
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
PY=/usr/bin/python3
D=tests/data/logs
P3="$D/tiny_seed1337.txt $D/tiny_seed42.txt $D/tiny_seed7.txt"

for c in plot compare submit; do
  if "$PG" $c --help 2>&1 | grep -q "usage: pgolf $c"; then echo "ok tools/${c}_help"; else echo "FAIL tools/${c}_help: no usage"; fi
done

# ---------------------------------------------------------------------------------- compare
out=$("$PG" compare $P3 "$D/tiny_dim96_seed1337.txt" 2>&1); rc=$?
want=("steps  *100/100  *100/100" "val_bpb  *2.92570522  *2.93165651  *2.92442916" \
      "metric  *final_int8_zlib_sliding_window_exact" "artifact_bytes  *310969  *311017  *311592" \
      "model_params  *123464  *123464  *123464" "seed  *1337  *42  *7  *1337" "^MODEL_DIM  *64  *64  *64  *96" \
      "^MATRIX_LR  *0.04  *0.04  *0.04  *0.03")
bad=""; for w in "${want[@]}"; do printf '%s\n' "$out" | grep -q -- "$w" || bad="$bad [$w]"; done
if [ $rc -ne 0 ]; then echo "FAIL tools/compare_pgolf_logs: status $rc: $out"
elif [ -n "$bad" ]; then echo "FAIL tools/compare_pgolf_logs: missing$bad in: $out"
elif printf '%s\n' "$out" | grep -q -E '^(SEED|RUN_ID|PGOLF_OUT_DIR) '; then echo "FAIL tools/compare_pgolf_logs: run-specific keys listed"
else echo "ok tools/compare_pgolf_logs"; fi

out=$("$PG" compare --metric final_int8_zlib_roundtrip_exact "$D/tiny_seed42.txt" 2>&1)
if printf '%s\n' "$out" | grep -q "val_bpb  *2.93074193"; then echo "ok tools/compare_metric"
else echo "FAIL tools/compare_metric: $out"; fi

out=$("$PG" compare "$D/record_format_seed2024.log" "$D/pr1392_format_seed7.log" 2>&1); rc=$?
want=("steps  *7217/20000 (cap)  *4552/20000 (cap)" "ms/step  *83.14  *129.19" "train_time_s  *600.0  *588.1" \
      "val_bpb  *1.13198621  *1.08082694" "metric  *final_int6_sliding_window_exact  *quantized_ttt" \
      "artifact_bytes  *15773579  *15991642" "model_params  *21778504  *35944536" "seed  *2024  *7" \
      "^MATRIX_LR  *0.02  *0.022")
bad=""; for w in "${want[@]}"; do printf '%s\n' "$out" | grep -q -- "$w" || bad="$bad [$w]"; done
if [ $rc -ne 0 ]; then echo "FAIL tools/compare_record_formats: status $rc: $out"
elif [ -n "$bad" ]; then echo "FAIL tools/compare_record_formats: missing$bad in: $out"
else echo "ok tools/compare_record_formats"; fi

out=$("$PG" compare --markdown $P3 2>&1)
if printf '%s\n' "$out" | head -2 | tail -1 | grep -q '^|-*|-*|-*|-*|$' && printf '%s\n' "$out" | grep -q '^| val_bpb '; then
  echo "ok tools/compare_markdown"; else echo "FAIL tools/compare_markdown: $out"; fi

# ------------------------------------------------------------------------- malformed logs
mkdir -p "$TMP/bad"
head -c 2900 "$D/tiny_seed1337.txt" > "$TMP/bad/cut_config.txt"   # cut inside the config dump
L=$(grep -n 'step:25/100 val_loss' "$D/tiny_seed1337.txt" | cut -d: -f1)
{ head -n $((L - 1)) "$D/tiny_seed1337.txt"; printf 'step:25/100 val_loss:5.4'; } > "$TMP/bad/cut_val.txt"
{ head -n $((L - 1)) "$D/tiny_seed1337.txt"; printf 'step:25/100 val_loss:5.4122 val_bpb:3.19\n'; } > "$TMP/bad/no_final.txt"
F=$(grep -n 'final_int8_zlib_sliding_window_exact' "$D/tiny_seed1337.txt" | cut -d: -f1)
{ head -n $((F - 1)) "$D/tiny_seed1337.txt"; printf 'final_int8_zlib_sliding_window_exact val_loss:4.95649309 val_bpb:2.92'; } > "$TMP/bad/cut_final.txt"
sed 's/^step:30\/100 train_loss:[0-9.]*/step:30\/100 train_loss:4.7x/' "$D/tiny_seed1337.txt" > "$TMP/bad/bad_number.txt"
sed 's/^step:40\/100 train_loss/step:4O\/100 train_loss/' "$D/tiny_seed1337.txt" > "$TMP/bad/bad_step.txt"
sed 's/^Total submission size int8+zlib: [0-9]*/Total submission size int8+zlib: many/' "$D/tiny_seed1337.txt" > "$TMP/bad/bad_size.txt"
: > "$TMP/bad/empty.txt"
printf 'step:1/10 train_loss:5.0 train_time:1ms\n\0\1\2' > "$TMP/bad/binary.txt"
printf 'hello\nthis is not a training log\n' > "$TMP/bad/prose.txt"
cut_val_line=$L
cases=("cut_config:cut_config.txt:" "cut_val:cut_val.txt:$cut_val_line: val_loss without val_bpb" \
       "cut_final:cut_final.txt:$F: last line cut short" "bad_number:bad_number.txt:" "bad_step:bad_step.txt:" \
       "bad_size:bad_size.txt:" "empty:empty file" "binary:binary data" "prose:no training progress lines" \
       "missing:No such file")
for c in "${cases[@]}"; do
  n=${c%%:*}; pat=${c#*:}
  f="$TMP/bad/$n.txt"
  expect_error "tools/bad_log_$n/compare" "$pat" "$PG" compare "$D/tiny_seed42.txt" "$f"
  rm -f "$TMP/o.png"
  expect_error "tools/bad_log_$n/plot" "$pat" "$PG" plot -o "$TMP/o.png" "$D/tiny_seed42.txt" "$f"
  [ -e "$TMP/o.png" ] && echo "FAIL tools/bad_log_$n/plot_no_output: $TMP/o.png written" || echo "ok tools/bad_log_$n/plot_no_output"
done
# a log cut before its final lines can be plotted and compared, but not submitted
if "$PG" compare "$TMP/bad/no_final.txt" > /dev/null 2>&1; then echo "ok tools/unfinished_log_compare"
else echo "FAIL tools/unfinished_log_compare: status non-zero"; fi
head -c 123456 /dev/zero > "$TMP/model.bin"; printf 'print(1)\n' > "$TMP/code.py"
expect_error tools/submit_unfinished_log "no final score line" "$PG" submit --name x --out "$TMP/rec" \
  --artifact "$TMP/model.bin" --code "$TMP/code.py" "$D/tiny_seed42.txt" "$TMP/bad/no_final.txt"
[ -e "$TMP/rec" ] && [ -n "$(ls -A "$TMP/rec")" ] && echo "FAIL tools/submit_unfinished_log/no_output: $(ls -A "$TMP/rec")" \
  || echo "ok tools/submit_unfinished_log/no_output"

# ----------------------------------------------------------------------------------- plot
if ! command -v "${PGOLF_GNUPLOT:-gnuplot}" > /dev/null 2>&1; then
  for n in plot_png_svg plot_step_only plot_record_formats plot_long_names; do echo "SKIP tools/$n (skipped: gnuplot absent)"; done
else
  # img_check FILE.png W H [FILE.svg]: PNG signature and IHDR size; the SVG parses as XML
  img_check() {
    "$PY" - "$@" <<'PY'
import struct, sys, xml.etree.ElementTree as ET
png, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
b = open(png, "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "no PNG signature"
ln, typ = struct.unpack(">I4s", b[8:16])
assert typ == b"IHDR" and ln == 13, "first chunk is not IHDR"
W, H = struct.unpack(">II", b[16:24])
assert (W, H) == (w, h), "PNG is %dx%d, expected %dx%d" % (W, H, w, h)
assert b[-8:-4] == b"IEND", "PNG does not end with IEND"
if len(sys.argv) > 4:
    root = ET.parse(sys.argv[4]).getroot()
    assert root.tag.endswith("svg"), "SVG root is <%s>" % root.tag
    assert len(list(root.iter())) > 50, "SVG nearly empty"
PY
  }
  rm -f "$TMP/p.png" "$TMP/p.svg"
  if out=$("$PG" plot -o "$TMP/p.png" --svg "$TMP/p.svg" $P3 "$D/tiny_dim96_seed1337.txt" 2>&1) &&
     msg=$(img_check "$TMP/p.png" 1500 1000 "$TMP/p.svg" 2>&1); then echo "ok tools/plot_png_svg"
  else echo "FAIL tools/plot_png_svg: $out $msg"; fi
  rm -f "$TMP/p.png"
  if out=$("$PG" plot --x step -o "$TMP/p.png" "$D/tiny_seed42.txt" 2>&1) && msg=$(img_check "$TMP/p.png" 1500 540 2>&1); then
    echo "ok tools/plot_step_only"; else echo "FAIL tools/plot_step_only: $out $msg"; fi
  rm -f "$TMP/p.png"
  if out=$("$PG" plot -o "$TMP/p.png" "$D/record_format_seed2024.log" "$D/pr1392_format_seed7.log" 2>&1) &&
     msg=$(img_check "$TMP/p.png" 1500 1000 2>&1); then echo "ok tools/plot_record_formats"
  else echo "FAIL tools/plot_record_formats: $out $msg"; fi
  # long run names: the legend keeps to its panel. Names sharing a long start lose it to the title;
  # distinct long names keep their start and end around "..."; short names stay as they are. The
  # gnuplot script is caught by a wrapper that then runs gnuplot.
  GPW="$TMP/gpwrap"
  printf '#!/bin/sh\ncp "$1" "%s/caught.gp" && exec "%s" "$1"\n' "$TMP" "$(command -v "${PGOLF_GNUPLOT:-gnuplot}")" > "$GPW"
  chmod +x "$GPW"
  rm -rf "$TMP/ln"; mkdir -p "$TMP/ln/shared" "$TMP/ln/distinct"
  pre=sp1024_9x512_muon_wd0.04_warmdown3500_mlp3x_bigramhash_smeargate_tiny
  for s in seed1337 seed42 seed7; do cp "$D/tiny_$s.txt" "$TMP/ln/shared/${pre}_$s.txt"; done
  cp "$D/tiny_seed1337.txt" "$TMP/ln/distinct/a_very_long_experiment_name_with_many_parts_number_one_for_overflow_testing_seed1337.txt"
  cp "$D/tiny_seed42.txt" "$TMP/ln/distinct/completely_different_long_run_description_for_testing_legend_overflow_seed42.txt"
  cp "$D/tiny_seed7.txt" "$TMP/ln/distinct/short.txt"
  why=""
  for set in shared distinct short; do
    rm -f "$TMP/caught.gp" "$TMP/p.png"
    if [ $set = short ]; then files="$P3"; else files=$(ls "$TMP/ln/$set"/*.txt); fi
    out=$(PGOLF_GNUPLOT="$GPW" "$PG" plot -o "$TMP/p.png" $files 2>&1) || { why="$why $set: $out;"; continue; }
    r=$("$PY" - "$TMP/caught.gp" $set <<'PY'
import re, sys
gp, case = open(sys.argv[1]).read(), sys.argv[2]
titles = re.findall(r"title '([^']*)'", gp)
main, keys = titles[0], set(t for t in titles if not re.match(r"(loss|val_bpb) vs ", t))
keys.discard(main)
names = set(re.sub(r" \(final [0-9.]+\)$", "", k) for k in keys)
bpb_keys = [k for k in keys if "(final " in k]
want = {
    "shared": ({"seed1337", "seed42", "seed7"}, "3 runs: sp1024_9x512_muon_wd0.04_warmdown3500_mlp3x_bigramhash_smeargate_tiny_*"),
    "distinct": ({"a_very_long_experiment...rflow_testing_seed1337", "completely_different_l...legend_overflow_seed42", "short"}, "3 runs"),
    "short": ({"tiny_seed1337", "tiny_seed42", "tiny_seed7"}, "3 runs"),
}[case]
problems = []
if names != want[0]: problems.append("legend names %s, expected %s" % (sorted(names), sorted(want[0])))
if main != want[1]: problems.append("title %r, expected %r" % (main, want[1]))
if max(len(k) for k in bpb_keys) > 62: problems.append("a val_bpb legend entry of %d characters" % max(len(k) for k in bpb_keys))
print("; ".join(problems) or "ok")
PY
)
    [ "$r" = ok ] || why="$why $set: $r;"
    msg=$(img_check "$TMP/p.png" 1500 1000 2>&1) || why="$why $set: $msg;"
  done
  if [ -z "$why" ]; then echo "ok tools/plot_long_names"; else echo "FAIL tools/plot_long_names:$why"; fi
fi
# gnuplot missing or failing: one error line, no picture
rm -f "$TMP/p.png"
PGOLF_GNUPLOT=/nonexistent/gnuplot expect_error tools/plot_no_gnuplot "gnuplot-nox" "$PG" plot -o "$TMP/p.png" "$D/tiny_seed42.txt"
PGOLF_GNUPLOT=false expect_error tools/plot_gnuplot_fails "gnuplot failed" "$PG" plot -o "$TMP/p.png" "$D/tiny_seed42.txt"
[ -e "$TMP/p.png" ] && echo "FAIL tools/plot_gnuplot_fails/no_output" || echo "ok tools/plot_gnuplot_fails/no_output"
# SIGTERM while gnuplot runs (a stand-in that sends it): pgolf ends by the signal and leaves neither its
# scratch folder nor a picture
rm -rf "$TMP/plottmp" "$TMP/p.png"; mkdir -p "$TMP/plottmp"
printf '#!/bin/sh\nkill -TERM $PPID\nsleep 1\n' > "$TMP/gpterm"; chmod +x "$TMP/gpterm"
(TMPDIR="$TMP/plottmp" PGOLF_GNUPLOT="$TMP/gpterm" "$PG" plot -o "$TMP/p.png" "$D/tiny_seed42.txt" >/dev/null 2>&1; exit $?) 2>/dev/null
rc=$?; left="$(ls -A "$TMP/plottmp")$(ls -A "$TMP" | grep '^p\.png')"
if [ "$rc" = 143 ] && [ -z "$left" ]; then echo "ok tools/plot_sigterm_leaves_nothing"
else echo "FAIL tools/plot_sigterm_leaves_nothing: exit $rc, left '$left'"; fi
expect_error tools/plot_bad_x "--x must be" "$PG" plot --x steps "$D/tiny_seed42.txt"
expect_error tools/plot_no_log "no log given" "$PG" plot -o "$TMP/p.png"

# --------------------------------------------------------------------------------- submit
# mklog FILE SEED BPB: a minimal pgolf log of a finished run whose final val_bpb is BPB (val_loss =
# 1.7 x BPB, so 1 bpb = 1.7 nats/token)
mklog() {
  local loss; loss=$("$PY" -c "print('%.8f' % (1.7 * $3))")
  printf 'config SEED=%s (env)\nstep:1/1 train_loss:5.0000 train_time:10ms step_avg:10.00ms\n' "$2" > "$1"
  printf 'step:1/1 val_loss:%.4f val_bpb:%.4f train_time:10ms step_avg:10.00ms\n' "$loss" "$3" >> "$1"
  printf 'Total submission size int8+zlib: 15000000 bytes\nfinal_int8_zlib_roundtrip_exact val_loss:%s val_bpb:%.8f\n' "$loss" "$3" >> "$1"
}
# check_submission DIR PREV...: submission.json against Python's statistics module, Welch's t and
# df from their formulas, the one-sided p-values by numerical integration of the t density
check_submission() {
  "$PY" - "$@" <<'PY'
import json, math, statistics, sys
d, prev = sys.argv[1], [float(x) for x in sys.argv[2].split(",")] if len(sys.argv) > 2 else None
j = json.load(open(d + "/submission.json"))
seeds = [str(s) for s in j["seeds"]]
bpb = [j["seed_results"][s]["val_bpb"] for s in seeds]
loss = [j["seed_results"][s]["val_loss"] for s in seeds]
def close(a, b, tol, what):
    assert abs(a - b) <= tol, "%s: %r vs %r" % (what, a, b)
close(j["val_bpb"], statistics.mean(bpb), 1e-8, "val_bpb mean")
close(j["val_loss"], statistics.mean(loss), 1e-8, "val_loss mean")
if len(bpb) > 1:
    close(j["val_bpb_std"], statistics.stdev(bpb), 1e-8, "val_bpb std")
    close(j["val_loss_std"], statistics.stdev(loss), 1e-8, "val_loss std")
assert j["bytes_total"] == j["bytes_model"] + j["bytes_code"], "bytes_total != model + code"
assert j["track"] == "10min_16mb" and j["date"] and j["name"]
if prev:
    ratio = statistics.mean(l / b for l, b in zip(loss, bpb))
    close(j["nats_per_bpb"], ratio, 1e-7, "nats_per_bpb")
    m1, m2, n1, n2 = statistics.mean(bpb), statistics.mean(prev), len(bpb), len(prev)
    q1, q2 = statistics.variance(bpb) / n1, statistics.variance(prev) / n2
    df = (q1 + q2) ** 2 / (q1 * q1 / (n1 - 1) + q2 * q2 / (n2 - 1))
    def tcdf(t, v):  # integral of the density from -inf to t, x = t - (1-s)/s
        c = math.exp(math.lgamma((v + 1) / 2) - math.lgamma(v / 2)) / math.sqrt(v * math.pi)
        f = lambda s: 0.0 if s == 0 else c * (1 + (t - (1 - s) / s) ** 2 / v) ** (-(v + 1) / 2) / (s * s)
        n = 20000; h = 1.0 / n
        return h / 3 * sum((1 if k in (0, n) else 4 if k % 2 else 2) * f(k * h) for k in range(n + 1))
    close(j["delta_bpb"], m1 - m2, 1e-8, "delta_bpb")
    close(j["delta_nats"], (m1 - m2) * ratio, 1e-8, "delta_nats")
    ts = {}
    for shift, tk, pk in ((0.0, "t_statistic", "p_value"), (0.005 / ratio, "t_statistic_0.005_nats", "p_value_0.005_nats")):
        t = ts[pk] = (m1 - m2 + shift) / math.sqrt(q1 + q2)
        close(j[tk], t, 1e-4, tk)
        p = tcdf(t, df)
        close(j[pk], p, 1e-6 * max(p, 1e-3), pk)
    close(j["welch_df"], df, 1e-4, "welch_df")
    if len(sys.argv) > 3:  # the closed form for 4 degrees of freedom
        close(df, 4.0, 1e-9, "df")
        for pk, t in ts.items():
            x = t / math.sqrt(1 + t * t / 4)
            close(j[pk], 0.5 + 3 / 8 * x * (1 - t * t / (12 * (1 + t * t / 4))), 1e-9, pk + " (closed form)")
PY
}
# the three pgolf logs, a non-pgolf artifact (model file + code file)
rm -rf "$TMP/rec"
if out=$("$PG" submit --name tiny_3seeds --date 2026-11-23 --artifact "$TMP/model.bin" --code "$TMP/code.py" \
           --out "$TMP/rec" --author "A. Golfer" --blurb 'three "tiny" seeds' $P3 2>&1); then
  S="$TMP/rec/2026-11-23_tiny_3seeds"
  files=$(cd "$S" && ls | tr '\n' ' ')
  if [ "$files" != "README.md submission.json train_seed1337.log train_seed42.log train_seed7.log " ]; then
    echo "FAIL tools/submit_folder: files $files"
  elif ! cmp -s "$S/train_seed42.log" "$D/tiny_seed42.txt"; then echo "FAIL tools/submit_folder: log not copied as is"
  elif ls -A "$TMP/rec" | grep -q '^\.'; then echo "FAIL tools/submit_folder: temporary left: $(ls -A "$TMP/rec")"
  elif ! msg=$(check_submission "$S" 2>&1); then echo "FAIL tools/submit_folder: $msg"
  elif ! "$PY" -c "
import json,sys; j=json.load(open('$S/submission.json'))
assert j['seeds']==[1337,42,7] and j['bytes_model']==123456 and j['bytes_code']==9 and j['bytes_total']==123465, j
assert abs(j['seed_results']['42']['val_bpb']-2.93165651)<1e-9 and j['seed_results']['7']['artifact_bytes']==311592
assert j['val_bpb_method']=='final_int8_zlib_sliding_window_exact' and j['author']=='A. Golfer' and j['blurb']=='three \"tiny\" seeds'
" 2>&1; then echo "FAIL tools/submit_folder: submission.json fields"
  elif ! grep -q '| \*\*total\*\* | \*\*123465\*\* |' "$S/README.md" || ! grep -q '| 42 | 4.96657529 | 2.93165651 |' "$S/README.md"; then
    echo "FAIL tools/submit_folder: README lacks the size or seed table"
  else echo "ok tools/submit_folder"; fi
else echo "FAIL tools/submit_folder: $out"; fi
expect_error tools/submit_exists "already exists" "$PG" submit --name tiny_3seeds --date 2026-11-23 --artifact "$TMP/model.bin" \
  --code "$TMP/code.py" --out "$TMP/rec" $P3

# Welch: a textbook case with 4 degrees of freedom (closed-form CDF) and an unequal-variance one
mkdir -p "$TMP/w"
mklog "$TMP/w/a1.txt" 1 1.10; mklog "$TMP/w/a2.txt" 2 1.11; mklog "$TMP/w/a3.txt" 3 1.12
if out=$("$PG" submit --name w4 --date 2026-01-02 --artifact "$TMP/model.bin" --code "$TMP/code.py" --out "$TMP/rec" \
           --prev-scores 1.13,1.14,1.15 --prev-name 'PR #1' "$TMP"/w/a?.txt 2>&1) &&
   msg=$(check_submission "$TMP/rec/2026-01-02_w4" 1.13,1.14,1.15 closed-form 2>&1); then
  if "$PY" -c "
import json; j=json.load(open('$TMP/rec/2026-01-02_w4/submission.json'))
assert abs(j['t_statistic']+3.6742)<1e-4 and abs(j['delta_nats']+0.051)<1e-9 and j['comparison_baseline']=='PR #1', j
"; then echo "ok tools/submit_welch_df4"; else echo "FAIL tools/submit_welch_df4: t or delta"; fi
else echo "FAIL tools/submit_welch_df4: $out $msg"; fi
mklog "$TMP/w/b1.txt" 11 1.0810; mklog "$TMP/w/b2.txt" 12 1.0795; mklog "$TMP/w/b3.txt" 13 1.0832; mklog "$TMP/w/b4.txt" 14 1.0801
PREV=1.0912,1.0899,1.0951
if out=$("$PG" submit --name welch --date 2026-01-03 --artifact "$TMP/model.bin" --code "$TMP/code.py" --out "$TMP/rec" \
           --prev-scores $PREV "$TMP"/w/b?.txt 2>&1) && msg=$(check_submission "$TMP/rec/2026-01-03_welch" $PREV 2>&1); then
  echo "ok tools/submit_welch_unequal"; else echo "FAIL tools/submit_welch_unequal: $out $msg"; fi

# submit's refusals: nothing is written
rm -rf "$TMP/rec2"
sub() { "$PG" submit --out "$TMP/rec2" "$@"; }
expect_error tools/submit_no_name "--name is required" sub --artifact "$TMP/model.bin" --code "$TMP/code.py" $P3
expect_error tools/submit_bad_name "only letters" sub --name 'a/b' --artifact "$TMP/model.bin" --code "$TMP/code.py" $P3
expect_error tools/submit_bad_date "not a date" sub --name x --date 2026-02-30 --artifact "$TMP/model.bin" --code "$TMP/code.py" $P3
expect_error tools/submit_bad_prev "comma-separated" sub --name x --prev-scores 1.1,abc --artifact "$TMP/model.bin" --code "$TMP/code.py" $P3
expect_error tools/submit_no_code "give --code" sub --name x --artifact "$TMP/model.bin" $P3
expect_error tools/submit_dup_seed "both ran seed 1337" sub --name x --artifact "$TMP/model.bin" --code "$TMP/code.py" \
  "$D/tiny_seed1337.txt" "$D/tiny_dim96_seed1337.txt"
truncate -s 15999992 "$TMP/big.bin"
expect_error tools/submit_over_cap "over the 16000000-byte cap by 1" sub --name x --artifact "$TMP/big.bin" --code "$TMP/code.py" $P3
printf 'PGOLFART garbage' > "$TMP/corrupt.pgolf"
expect_error tools/submit_corrupt_artifact "corrupt.pgolf" sub --name x --artifact "$TMP/corrupt.pgolf" $P3
expect_error tools/submit_mixed_metrics "choose one line with --metric" sub --name x --artifact "$TMP/model.bin" --code "$TMP/code.py" \
  "$D/tiny_seed42.txt" "$TMP/w/a1.txt"
[ -e "$TMP/rec2" ] && [ -n "$(ls -A "$TMP/rec2")" ] && echo "FAIL tools/submit_refusals/no_output: $(ls -A "$TMP/rec2")" \
  || echo "ok tools/submit_refusals/no_output"

# a real pgolf artifact: two seeds of a tiny run on random tokens, submitted with seed 2's artifact
TOK="$PGOLF_SHARED/data/tokenizers/fineweb_1024_bpe.model"
if [ ! -e "$TOK" ]; then echo "SKIP tools/submit_pgolf_artifact (skipped: ../shared/data absent)"
else
  "$PY" - "$TMP/d" <<'PY'
import os, random, struct, sys
os.makedirs(sys.argv[1], exist_ok=True)
for name, n in (("fineweb_val_000000.bin", 2049), ("fineweb_train_000000.bin", 20000)):
    rng = random.Random(n); hdr = [0] * 256; hdr[0], hdr[1], hdr[2] = 20240520, 1, n
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(struct.pack("<256i", *hdr)); f.write(struct.pack("<%dH" % n, *[rng.randrange(1024) for _ in range(n)]))
PY
  for s in 1 2; do
    env OMP_NUM_THREADS=1 DATA_PATH="$TMP/d" TOKENIZER_PATH="$TOK" VOCAB_SIZE=1024 NUM_LAYERS=1 MODEL_DIM=32 NUM_HEADS=2 \
      NUM_KV_HEADS=1 TRAIN_SEQ_LEN=32 TRAIN_BATCH_TOKENS=512 VAL_BATCH_SIZE=2048 ITERATIONS=2 WARMUP_STEPS=0 \
      VAL_LOSS_EVERY=0 SEED=$s RUN_ID=s$s PGOLF_OUT_DIR="$TMP/o$s" PGOLF_LOG_DIR="$TMP/l" "$PG" train > "$TMP/train$s.out" 2>&1
  done
  A=$(ls "$TMP"/o2/final_model.*.pgolf 2>/dev/null | head -1)
  if [ -z "$A" ]; then echo "FAIL tools/submit_pgolf_artifact: training failed: $(tail -3 "$TMP/train2.out")"
  elif ! out=$("$PG" submit --name real --date 2026-03-04 --artifact "$A" --out "$TMP/rec3" "$TMP/l/s1.txt" "$TMP/l/s2.txt" 2>&1); then
    echo "FAIL tools/submit_pgolf_artifact: $out"
  else
    S="$TMP/rec3/2026-03-04_real"
    size=$(stat -c %s "$A"); code=$(grep -m1 '^Code size:' "$TMP/l/s2.txt" | grep -o '[0-9]*')
    if ! msg=$(check_submission "$S" 2>&1); then echo "FAIL tools/submit_pgolf_artifact: $msg"
    elif ! "$PY" -c "
import json; j=json.load(open('$S/submission.json'))
assert j['bytes_total']==$size and j['bytes_code']==$code, j
" 2>&1; then echo "FAIL tools/submit_pgolf_artifact: bytes_total/bytes_code"
    elif [ "$(stat -c %s "$S/pgolf_src.tar.xz")" != "$code" ] || ! xz -t "$S/pgolf_src.tar.xz" 2>/dev/null; then
      echo "FAIL tools/submit_pgolf_artifact: pgolf_src.tar.xz is not the code section"
    elif ! grep -q "artifact of seed 2" "$S/README.md"; then echo "FAIL tools/submit_pgolf_artifact: README does not name seed 2"
    else echo "ok tools/submit_pgolf_artifact"; fi
  fi
fi
