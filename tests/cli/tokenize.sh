#!/usr/bin/env bash
# tokenize.sh: `pgolf tokenize` (src/tokenize.c, docs/tokenize.md) against the Python reference of the
# challenge exporter's shards (tests/reference/tokenize_ref.py, SentencePiece 0.1.97):
#   - shards of the FineWeb sample with SP1024 byte-identical to the reference (several train shards,
#     documents across shard ends), and a layout check independent of the reference (headers, token
#     counts, one BOS per document, names);
#   - the same shards from plain / gzip / xz / zstd files (also several members / streams / frames),
#     stdin, several inputs, and 1, 2 or 7 threads;
#   - the plain-text format (blank-line separated documents), --format, --text-key, --max-docs;
#   - every policy with its FILE:LINE message: malformed JSON, missing/non-string text member,
#     invalid UTF-8 (error, --skip-bad, --fix-utf8 == Python's errors="replace"), empty documents
#     (lone BOS reported, --skip-empty), whitespace-only lines, fewer documents than --val-docs, no
#     documents; on every error (and on SIGTERM) nothing is written and old shards are untouched;
#     stale shards are removed on success;
#   - truncated/corrupt .xz/.gz/.zst inputs: one error line naming the file;
#   - the progress line on stderr (not with --quiet) and the summary on stdout (content only).
cd "$(dirname "$0")/../.."
. tests/cli_lib.sh
PY=/usr/bin/python3
REF="$PY tests/reference/tokenize_ref.py"
SHARED="${PGOLF_SHARED:-$(cd .. && pwd)/shared}"
M="$SHARED/data/tokenizers/fineweb_1024_bpe.model"
CORPUS="$SHARED/data/corpus/fineweb_sample_300.jsonl.xz"

if "$PG" tokenize --help 2>&1 | grep -q "usage: pgolf tokenize" && "$PG" tokenize --help | grep -q "docs/tokenize.md"; then
  echo "ok tokenize/help"
else
  echo "FAIL tokenize/help: no usage or no pointer to docs/tokenize.md"
fi
expect_error tokenize/no_tokenizer "--tokenizer MODEL is required" "$PG" tokenize --out "$TMP/x" in.jsonl
expect_error tokenize/bad_option "unknown option '--bogus'" "$PG" tokenize --bogus

NAMES="exporter_ref shard_layout compression_stdin threads several_inputs text_format format_options
  max_docs val_split_edges edge_cases malformed_json missing_text invalid_utf8 skip_bad fix_utf8
  text_utf8_line empty_docs skip_empty whitespace_lines few_docs no_docs error_writes_nothing
  stale_removed corrupt_compressed sigterm_writes_nothing sigterm_any_moment progress_summary"
if [ ! -e "$M" ] || [ ! -e "$CORPUS" ]; then
  for n in $NAMES; do echo "SKIP tokenize/$n (skipped: ../shared/data absent)"; done; exit 0
fi
if ! "$PY" -c 'import sentencepiece, zstandard' 2>/dev/null; then
  for n in $NAMES; do echo "SKIP tokenize/$n (skipped: /usr/bin/python3 with sentencepiece and zstandard absent)"; done
  exit 0
fi

D="$TMP/data"
mkdir -p "$D"
xz -dc "$CORPUS" > "$D/fw.jsonl"
# many.jsonl: every non-blank line of every FineWeb document as a document of its own (~thousands of
# short documents: several reader batches); fw.txt: the documents as plain text, one blank line apart
"$PY" - "$D" <<'PY'
import json, sys
d = sys.argv[1]
docs = [json.loads(l)["text"] for l in open(d + "/fw.jsonl", encoding="utf-8")]
with open(d + "/many.jsonl", "w", encoding="utf-8") as f:
    for t in docs:
        for p in t.split("\n"):
            if p.strip():
                f.write(json.dumps({"id": len(p), "text": p}) + "\n")
with open(d + "/fw.txt", "w", encoding="utf-8", newline="") as f:
    f.write("\n \n")                      # leading blank lines
    for i, t in enumerate(docs):
        nl = "\r\n" if i % 3 == 0 else "\n"   # some documents with CRLF line ends
        f.write(t.replace("\n", nl) + nl + ("\n" if i % 2 else " \t\n\n"))
    f.write("last paragraph without a final newline")
PY
n_many=$(wc -l < "$D/many.jsonl")

# same_dir A B: identical sets of files with identical bytes (prints why not)
same_dir() {
  local la lb f
  la=$(cd "$1" 2>/dev/null && ls -A | tr '\n' ' '); lb=$(cd "$2" 2>/dev/null && ls -A | tr '\n' ' ')
  if [ "$la" != "$lb" ]; then echo "files [$la] vs reference [$lb]"; return 1; fi
  [ -n "$la" ] || { echo "no files"; return 1; }
  for f in $la; do cmp -s "$1/$f" "$2/$f" || { echo "$f differs from the reference"; return 1; }; done
}
tok() { "$PG" tokenize --tokenizer "$M" --quiet "$@"; }
# check NAME OUT REF: OUT equals REF
check() {
  local why
  if why=$(same_dir "$2" "$3"); then echo "ok tokenize/$1"; else echo "FAIL tokenize/$1: $why"; fi
}

# ---- the exporter's shards ----
$REF "$M" "$TMP/ref_fw" 50 40000 "$D/fw.jsonl" > /dev/null
tok --out "$TMP/fw" --val-docs 50 --shard-tokens 40000 --threads 2 "$CORPUS" > /dev/null 2>&1
check exporter_ref "$TMP/fw" "$TMP/ref_fw"

# the layout, independently of the reference: names, headers, full shards, one BOS per document,
# documents continuing across shard ends
"$PY" - "$TMP/fw" 40000 50 300 > "$TMP/layout.out" 2>&1 <<'PY'
import os, struct, sys
d, st, nval, ndocs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
files = sorted(os.listdir(d))
bos_total, crossing = 0, 0
for split, want_docs in (("val", nval), ("train", ndocs - nval)):
    names = [f for f in files if f.startswith("fineweb_%s_" % split)]
    assert names == ["fineweb_%s_%06d.bin" % (split, i) for i in range(len(names))], names
    assert len(names) >= (1 if split == "val" else 3), (split, names)
    bos = 0
    for i, n in enumerate(names):
        b = open(os.path.join(d, n), "rb").read()
        h = struct.unpack("<256i", b[:1024])
        assert h[0] == 20240520 and h[1] == 1 and not any(h[3:]), (n, h[:4])
        assert len(b) == 1024 + 2 * h[2], (n, len(b), h[2])
        assert h[2] == st if i < len(names) - 1 else 0 < h[2] <= st, (n, h[2])
        toks = struct.unpack("<%dH" % h[2], b[1024:])
        assert max(toks) < 1024
        if i == 0: assert toks[0] == 1, "a split starts with BOS"
        elif toks[0] != 1: crossing += 1
        bos += toks.count(1)
    assert bos == want_docs, (split, bos, want_docs)
assert crossing >= 2, crossing
print("layout ok")
PY
if grep -q "layout ok" "$TMP/layout.out"; then echo "ok tokenize/shard_layout"; else echo "FAIL tokenize/shard_layout: $(tail -1 "$TMP/layout.out")"; fi

# ---- inputs: compression, stdin, threads, several files ----
$REF "$M" "$TMP/ref_many" 1000 30000 "$D/many.jsonl" > /dev/null
gzip -c "$D/many.jsonl" > "$D/many.jsonl.gz"
xz -T1 -c "$D/many.jsonl" > "$D/many.jsonl.xz"
zstd -q -c "$D/many.jsonl" > "$D/many.jsonl.zst"
why=""
for f in many.jsonl many.jsonl.gz many.jsonl.xz many.jsonl.zst; do
  rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 --threads 2 "$D/$f" > /dev/null 2>&1
  w=$(same_dir "$TMP/o" "$TMP/ref_many") || why="$why $f: $w;"
done
# several gzip members / xz streams / zstd frames in one file (cut in the middle of a line)
head -c 300000 "$D/many.jsonl" > "$D/a.part"; tail -c +300001 "$D/many.jsonl" > "$D/b.part"
(gzip -c "$D/a.part"; gzip -c "$D/b.part") > "$D/multi.jsonl.gz"
(xz -T1 -c "$D/a.part"; xz -T1 -c "$D/b.part") > "$D/multi.jsonl.xz"
(zstd -q -c "$D/a.part"; zstd -q -c "$D/b.part") > "$D/multi.jsonl.zst"
for f in multi.jsonl.gz multi.jsonl.xz multi.jsonl.zst; do
  rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 --threads 2 "$D/$f" > /dev/null 2>&1
  w=$(same_dir "$TMP/o" "$TMP/ref_many") || why="$why $f: $w;"
done
for f in many.jsonl many.jsonl.xz many.jsonl.zst many.jsonl.gz; do
  rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 --threads 2 - < "$D/$f" > /dev/null 2>&1
  w=$(same_dir "$TMP/o" "$TMP/ref_many") || why="$why stdin $f: $w;"
done
if [ -z "$why" ]; then echo "ok tokenize/compression_stdin"; else echo "FAIL tokenize/compression_stdin:$why"; fi

why=""
for t in 1 2 7; do
  rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 --threads $t "$D/many.jsonl.zst" > /dev/null 2>&1
  w=$(same_dir "$TMP/o" "$TMP/ref_many") || why="$why threads $t: $w;"
done
if [ -z "$why" ]; then echo "ok tokenize/threads"; else echo "FAIL tokenize/threads:$why"; fi

# several inputs are read in order, as one stream of documents
head -n 1500 "$D/many.jsonl" | gzip -c > "$D/part1.jsonl.gz"
tail -n +1501 "$D/many.jsonl" > "$D/part2.jsonl"
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 "$D/part1.jsonl.gz" - < "$D/part2.jsonl" > /dev/null 2>&1
check several_inputs "$TMP/o" "$TMP/ref_many"

# ---- plain text ----
$REF "$M" "$TMP/ref_txt" 40 50000 "$D/fw.txt" > "$TMP/ref_txt.n"
xz -T1 -c "$D/fw.txt" > "$D/fw.txt.xz"
tok --out "$TMP/txt" --val-docs 40 --shard-tokens 50000 --threads 2 "$D/fw.txt.xz" > "$TMP/txt.out" 2>&1
why=$(same_dir "$TMP/txt" "$TMP/ref_txt")
n_txt=$(cat "$TMP/ref_txt.n")
if [ -z "$why" ] && [ "$n_txt" -gt 300 ] && grep -q "^tokenize: $n_txt docs" "$TMP/txt.out"; then echo "ok tokenize/text_format"
else echo "FAIL tokenize/text_format: $why (reference: $n_txt docs; $(head -1 "$TMP/txt.out"))"; fi

# --format overrides the name; --text-key picks another member
cp "$D/fw.txt" "$D/fw.dat"; sed 's/"text": /"body": /' "$D/many.jsonl" > "$D/body.txt"
why=""
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 40 --shard-tokens 50000 --format text "$D/fw.dat" > /dev/null 2>&1
w=$(same_dir "$TMP/o" "$TMP/ref_txt") || why="$why --format text: $w;"
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 1000 --shard-tokens 30000 --format jsonl --text-key body "$D/body.txt" > /dev/null 2>&1
w=$(same_dir "$TMP/o" "$TMP/ref_many") || why="$why --format jsonl --text-key body: $w;"
if [ -z "$why" ]; then echo "ok tokenize/format_options"; else echo "FAIL tokenize/format_options:$why"; fi

$REF "$M" "$TMP/ref_max" 100 20000 --max-docs 1234 "$D/many.jsonl" > /dev/null
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 100 --shard-tokens 20000 --max-docs 1234 "$D/many.jsonl" > /dev/null 2>&1
check max_docs "$TMP/o" "$TMP/ref_max"

# all documents validation (no train shard), or none
why=""
for v in 0 300; do
  $REF "$M" "$TMP/ref_v$v" $v 100000 "$D/fw.jsonl" > /dev/null
  tok --out "$TMP/v$v" --val-docs $v --shard-tokens 100000 "$D/fw.jsonl" > /dev/null 2>&1
  w=$(same_dir "$TMP/v$v" "$TMP/ref_v$v") || why="$why --val-docs $v: $w;"
done
[ -e "$TMP/v0/fineweb_val_000000.bin" ] && why="$why --val-docs 0 wrote a val shard;"
[ -e "$TMP/v300/fineweb_train_000000.bin" ] && why="$why --val-docs 300 wrote a train shard;"
if [ -z "$why" ]; then echo "ok tokenize/val_split_edges"; else echo "FAIL tokenize/val_split_edges:$why"; fi

# ---- JSON and text edge cases the exporter accepts (and pgolf's blank-line and BOM policies) ----
"$PY" - "$D/edge.jsonl" "$D/fw.jsonl" <<'PY'
import json, sys
long = " ".join(json.loads(l)["text"] for l in open(sys.argv[2], encoding="utf-8").readlines()[:20])
lines = [
    '\ufeff{"text": "a BOM before the first line"}',
    '{"text": "escapes \\u00e9 \\ud83d\\ude00 \\t tab \\n newline \\" quote \\\\ backslash \\/ slash"}',
    '{"text": "first", "text": "the last duplicate wins"}',
    '  {"meta": {"a": [1, 2.5e3, null, true, false, {"text": "nested"}]}, "text": "members around"}  ',
    '{"text": "NUL \\u0000 inside"}',
    '{"text": "caf\u00e9 \u4e2d\u6587 \ufb01 \uff21\uff22 e\u0301 \u00a0nbsp \u2028 sep"}',
    '{"text": "<s> </s> <pad> <unk> control surfaces as text"}',
    '{"text": ' + json.dumps(long) + '}',
    '{"text": "CRLF line"}\r',
    '{"text": "12345678901234567890 digits"}',
]
open(sys.argv[1], "w", encoding="utf-8", newline="").write("\n".join(lines) + "\n")
PY
$REF "$M" "$TMP/ref_edge" 3 2000 "$D/edge.jsonl" > /dev/null 2> "$TMP/ref_edge.err"
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 3 --shard-tokens 2000 "$D/edge.jsonl" > /dev/null 2> "$TMP/edge.err"
if why=$(same_dir "$TMP/o" "$TMP/ref_edge"); then echo "ok tokenize/edge_cases"
else echo "FAIL tokenize/edge_cases: $why $(head -2 "$TMP/edge.err" "$TMP/ref_edge.err")"; fi

# ---- policies ----
# pol.jsonl: good lines, blank lines, then one line per problem (line numbers count every line)
"$PY" - "$D" <<'PY'
import sys
d = sys.argv[1]
good = [b'{"text": "Document number %d, with some words."}' % i for i in range(8)]
def write(name, lines):
    open(d + "/" + name, "wb").write(b"\n".join(lines) + b"\n")
write("json.jsonl", good[:3] + [b"", b"   \t"] + good[3:5] + [b'{"text": "unterminated}'] + good[5:])   # line 8
write("member.jsonl", good[:4] + [b'{"title": "no text member"}'] + good[4:6] + [b'{"text": 5}', b'[1, 2]'] + good[6:])  # 5, 8, 9
write("utf8.jsonl", good[:2] + [b"\r", b'{"text": "bad \xff byte"}'] + good[2:])                       # line 4
bad = (b'{"text": "ill-formed: \xc0\x80 | \xed\xa0\x80 | \xf0\x9f\x98 x | \x80 | \xf5\xff | \xe0\x80\x80 '
       b'| \xf4\x90\x80\x80 | \xe1\x80" , "x": "\xc2"}')
write("fix.jsonl", good[:2] + [bad, b'{"text": "ok \xe2\x82\xac and \xe2\x82"}', b'{"text": "\xf0\x9f\x98\x80 fine"}'] + good[2:])
write("empty.jsonl", good[:2] + [b'{"text": ""}'] + good[2:4] + [b'{"text": "   \\n\\t "}'] + good[4:])  # lines 3, 6
write("blank.jsonl", [b"", b" "] + good[:3] + [b"\t\t", b"\f", b"", b"\v \r"] + good[3:] + [b"   "])
open(d + "/utf8.txt", "wb").write(b"para one\nstill one\n\n\npara two\nline 6 \xfe bad\n\nthree\n")
PY
expect_error tokenize/malformed_json "json.jsonl:8: invalid JSON" tok --out "$TMP/e" --val-docs 1 "$D/fw.jsonl" "$D/json.jsonl"
r1=$(tok --out "$TMP/e" --val-docs 1 "$D/member.jsonl" 2>&1 >/dev/null)
r2=$(tok --out "$TMP/mt" --val-docs 1 --skip-bad "$D/member.jsonl" 2>&1 >/dev/null)
case "$r1" in
  *'member.jsonl:5: no string member "text"'*) ;;
  *) echo "FAIL tokenize/missing_text: '$r1'"; r1="";;
esac
if [ -n "$r1" ]; then
  if printf '%s\n' "$r2" | grep -q 'member.jsonl:5: no string member "text"; line skipped' \
     && printf '%s\n' "$r2" | grep -q 'member.jsonl:8: not a string member "text"; line skipped' \
     && printf '%s\n' "$r2" | grep -q 'member.jsonl:9: not a JSON object; line skipped'; then echo "ok tokenize/missing_text"
  else echo "FAIL tokenize/missing_text: --skip-bad reports: $r2"; fi
fi
expect_error tokenize/invalid_utf8 "utf8.jsonl:4: invalid UTF-8 at byte 14" tok --out "$TMP/e" --val-docs 1 "$D/utf8.jsonl"

# --skip-bad: the bad lines are reported and left out, the rest is what the reference makes without them
grep -v -a -e unterminated "$D/json.jsonl" > "$D/json_clean.jsonl"
grep -v -a -e 'no text member' -e '"text": 5' -e '^\[1' "$D/member.jsonl" > "$D/member_clean.jsonl"
grep -v -a -e 'bad ' "$D/utf8.jsonl" > "$D/utf8_clean.jsonl"
$REF "$M" "$TMP/ref_sb" 2 50 "$D/json_clean.jsonl" "$D/member_clean.jsonl" "$D/utf8_clean.jsonl" > /dev/null
rm -rf "$TMP/o"
tok --out "$TMP/o" --val-docs 2 --shard-tokens 50 --skip-bad "$D/json.jsonl" "$D/member.jsonl" "$D/utf8.jsonl" > "$TMP/sb.out" 2> "$TMP/sb.err"
why=$(same_dir "$TMP/o" "$TMP/ref_sb")
for p in "json.jsonl:8: invalid JSON" "member.jsonl:5: no string" "member.jsonl:8: not a string" "member.jsonl:9: not a JSON object" \
         "utf8.jsonl:4: invalid UTF-8"; do
  grep -q "^pgolf: warning: .*$p.*line skipped" "$TMP/sb.err" || why="$why no warning '$p';"
done
grep -q " 5 bad lines skipped" "$TMP/sb.out" || why="$why summary lacks '5 bad lines skipped': $(tail -1 "$TMP/sb.out");"
if [ -z "$why" ]; then echo "ok tokenize/skip_bad"; else echo "FAIL tokenize/skip_bad: $why"; fi

# --fix-utf8 equals Python's bytes.decode("utf-8", "replace") then encode
$REF "$M" "$TMP/ref_fix" 2 30 --fix-utf8 "$D/fix.jsonl" "$D/utf8.txt" > /dev/null
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 2 --shard-tokens 30 --fix-utf8 "$D/fix.jsonl" "$D/utf8.txt" > "$TMP/fix.out" 2> "$TMP/fix.err"
why=$(same_dir "$TMP/o" "$TMP/ref_fix")
grep -q "fix.jsonl:3: 18 invalid UTF-8 sequences replaced by U+FFFD" "$TMP/fix.err" || why="$why no report for fix.jsonl:3: $(head -1 "$TMP/fix.err");"
grep -q "fix.jsonl:4: 1 invalid UTF-8 sequence replaced" "$TMP/fix.err" || why="$why no report for fix.jsonl:4;"
grep -q "utf8.txt:5: 1 invalid UTF-8 sequence replaced" "$TMP/fix.err" || why="$why no report for utf8.txt:5;"
grep -q " 3 lines with UTF-8 replaced" "$TMP/fix.out" || why="$why summary: $(tail -1 "$TMP/fix.out");"
if [ -z "$why" ]; then echo "ok tokenize/fix_utf8"; else echo "FAIL tokenize/fix_utf8: $why"; fi

# in plain text the line of the bad byte is reported, not the paragraph's first line
expect_error tokenize/text_utf8_line "utf8.txt:6: invalid UTF-8 at byte" tok --out "$TMP/e" --val-docs 1 "$D/utf8.txt"

# empty documents: a lone BOS (as the exporter writes), each reported; --skip-empty drops them
$REF "$M" "$TMP/ref_empty" 3 7 "$D/empty.jsonl" > /dev/null
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 3 --shard-tokens 7 "$D/empty.jsonl" > "$TMP/empty.out" 2> "$TMP/empty.err"
why=$(same_dir "$TMP/o" "$TMP/ref_empty")
grep -q "^pgolf: warning: .*empty.jsonl:3: empty document kept as a lone BOS" "$TMP/empty.err" || why="$why no report of line 3;"
grep -q "^pgolf: warning: .*empty.jsonl:6: empty document kept as a lone BOS" "$TMP/empty.err" || why="$why no report of line 6;"
grep -q "^tokenize: 10 docs (3 val, 7 train)" "$TMP/empty.out" && grep -q "; 2 empty kept, 0 empty skipped" "$TMP/empty.out" || why="$why summary: $(cat "$TMP/empty.out");"
if [ -z "$why" ]; then echo "ok tokenize/empty_docs"; else echo "FAIL tokenize/empty_docs: $why"; fi

$REF "$M" "$TMP/ref_skipe" 3 7 --skip-empty "$D/empty.jsonl" > /dev/null
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 3 --shard-tokens 7 --skip-empty "$D/empty.jsonl" > "$TMP/skipe.out" 2> "$TMP/skipe.err"
why=$(same_dir "$TMP/o" "$TMP/ref_skipe")
grep -q "empty.jsonl:3: empty document skipped" "$TMP/skipe.err" || why="$why no report of line 3;"
grep -q "empty.jsonl:6: empty document skipped" "$TMP/skipe.err" || why="$why no report of line 6;"
grep -q "^tokenize: 8 docs (3 val, 5 train)" "$TMP/skipe.out" && grep -q "; 0 empty kept, 2 empty skipped" "$TMP/skipe.out" || why="$why summary: $(cat "$TMP/skipe.out");"
if [ -z "$why" ]; then echo "ok tokenize/skip_empty"; else echo "FAIL tokenize/skip_empty: $why"; fi

# whitespace-only JSONL lines are ignored and counted (never an error, never a document)
$REF "$M" "$TMP/ref_blank" 2 10 "$D/blank.jsonl" > /dev/null
rm -rf "$TMP/o"; tok --out "$TMP/o" --val-docs 2 --shard-tokens 10 "$D/blank.jsonl" > "$TMP/blank.out" 2> "$TMP/blank.err"
why=$(same_dir "$TMP/o" "$TMP/ref_blank")
grep -q "^tokenize: 8 docs (2 val, 6 train)" "$TMP/blank.out" && grep -q ", 7 blank lines ignored$" "$TMP/blank.out" || why="$why summary: $(cat "$TMP/blank.out");"
[ -s "$TMP/blank.err" ] && why="$why stderr: $(head -1 "$TMP/blank.err");"
if [ -z "$why" ]; then echo "ok tokenize/whitespace_lines"; else echo "FAIL tokenize/whitespace_lines: $why"; fi

expect_error tokenize/few_docs "only 300 documents, fewer than --val-docs 301" tok --out "$TMP/e" --val-docs 301 "$CORPUS"
: > "$D/empty_file.jsonl"; printf '\n  \n\n' > "$D/blank_only.jsonl"; xz -c < "$D/empty_file.jsonl" > "$D/empty_file.jsonl.xz"
why=""
for f in empty_file.jsonl blank_only.jsonl empty_file.jsonl.xz; do
  r=$(expect_error x "no documents in the input" tok --out "$TMP/e" --val-docs 0 "$D/$f")
  [ "$r" = "ok x" ] || why="$why $f: $r;"
done
[ -e "$TMP/e" ] && why="$why $TMP/e was left behind;"
if [ -z "$why" ]; then echo "ok tokenize/no_docs"; else echo "FAIL tokenize/no_docs:$why"; fi

# ---- nothing written on error; stale shards removed on success ----
# a failure after several shards were written (bad line at the very end of a multi-batch input):
# new directories (here three levels) are not left behind; an existing one keeps its old shards and gets no temporary file
cp "$D/many.jsonl" "$D/many_bad.jsonl"; echo '{"text": broken}' >> "$D/many_bad.jsonl"
why=""
tok --out "$TMP/new/a/b" --val-docs 10 --shard-tokens 5000 "$D/many_bad.jsonl" > /dev/null 2> "$TMP/nw.err" && why="$why exit 0;"
grep -q "many_bad.jsonl:$((n_many + 1)): invalid JSON" "$TMP/nw.err" || why="$why error: $(cat "$TMP/nw.err");"
[ -e "$TMP/new" ] && why="$why the new output directories were left: $(find "$TMP/new" | head -3 | tr '\n' ' ');"
mkdir -p "$TMP/old"; cp "$TMP/fw/"* "$TMP/old/"; echo keep > "$TMP/old/notes.txt"
(cd "$TMP/old" && ls -A | sort && md5sum *) > "$TMP/old.sum"
for args in "$D/many_bad.jsonl" "--val-docs 100000 $D/many.jsonl" "$D/utf8.jsonl" "$D/many.jsonl.xz $D/json.jsonl"; do
  tok --out "$TMP/old" --val-docs 10 --shard-tokens 5000 $args > /dev/null 2>&1 && why="$why '$args' exit 0;"
  (cd "$TMP/old" && ls -A | sort && md5sum *) | cmp -s - "$TMP/old.sum" || why="$why '$args' changed the old directory: $(ls "$TMP/old" | tr '\n' ' ');"
done
if [ -z "$why" ]; then echo "ok tokenize/error_writes_nothing"; else echo "FAIL tokenize/error_writes_nothing:$why"; fi

# success over an older, larger set: only the new shards remain (other files are kept). A shard
# temporary of a run killed outright (its process gone) is removed with a note; one of a live
# process, and other files' temporaries, are kept.
rm -rf "$TMP/st"; tok --out "$TMP/st" --val-docs 1000 --shard-tokens 3000 "$D/many.jsonl" > /dev/null 2>&1
echo keep > "$TMP/st/notes.txt"; echo keep > "$TMP/st/fineweb_train_notes.txt"
sh -c 'exit 0' & dead=$!; wait $dead
echo x > "$TMP/st/fineweb_train_000099.bin.tmp.$dead"; echo x > "$TMP/st/notes.txt.tmp.$dead"
echo x > "$TMP/st/fineweb_val_000000.bin.tmp.$$"
n_before=$(ls "$TMP/st" | grep -c '^fineweb_.*\.bin$')
tok --out "$TMP/st" --val-docs 1000 --shard-tokens 30000 "$D/many.jsonl" > /dev/null 2> "$TMP/st.err"
rm "$TMP/st/notes.txt" "$TMP/st/fineweb_train_notes.txt" "$TMP/st/notes.txt.tmp.$dead" \
  "$TMP/st/fineweb_val_000000.bin.tmp.$$" 2>/dev/null && kept=1 || kept=0
grep -q "removed $TMP/st/fineweb_train_000099.bin.tmp.$dead, left by process $dead, which no longer runs" "$TMP/st.err" \
  && noted=1 || noted=0
if why=$(same_dir "$TMP/st" "$TMP/ref_many") && [ $kept = 1 ] && [ $noted = 1 ] && [ "$n_before" -gt 40 ]; then
  echo "ok tokenize/stale_removed"
else echo "FAIL tokenize/stale_removed: $why (other files kept: $kept, noted: $noted, shards before: $n_before)"; fi

# ---- truncated or corrupt compressed input ----
# Without flags: one error line naming the file (corruption inside a gzip member may first show as a
# bad line, since gzip's CRC comes at the member's end). With --skip-bad --fix-utf8 (so that garbage
# lines do not stop the run first) the run still ends in the decompressor's own error. Never output.
why=""
for z in gz xz zst; do
  f="$D/many.jsonl.$z"; s=$(stat -c %s "$f")
  head -c $((s / 2)) "$f" > "$D/trunc.jsonl.$z"
  head -c $((s - 5)) "$f" > "$D/trunc_end.jsonl.$z"
  cp "$f" "$D/corrupt.jsonl.$z"
  printf '\x55\xaa\x55\xaa\x55\xaa\x55\xaa' | dd of="$D/corrupt.jsonl.$z" bs=1 seek=$((s / 3)) conv=notrunc 2>/dev/null
  case $z in gz) kind=gzip;; xz) kind=xz;; zst) kind=zstd;; esac
  for c in trunc trunc_end corrupt; do
    r=$(expect_error x "$D/$c.jsonl.$z:" tok --out "$TMP/e" --val-docs 10 "$D/$c.jsonl.$z")
    [ "$r" = "ok x" ] || why="$why $c.$z: $r;"
    tok --out "$TMP/e" --val-docs 10 --skip-bad --fix-utf8 "$D/$c.jsonl.$z" > /dev/null 2> "$TMP/z.err" && why="$why $c.$z: exit 0;"
    e=$(tail -1 "$TMP/z.err")
    case "$e" in "pgolf: error: $D/$c.jsonl.$z: "*"$kind"*) ;; *) why="$why $c.$z: the last line is not a $kind error: $e;";; esac
  done
done
[ -e "$TMP/e" ] && why="$why output left behind;"
if [ -z "$why" ]; then echo "ok tokenize/corrupt_compressed"; else echo "FAIL tokenize/corrupt_compressed:$why"; fi

# ---- SIGTERM while shards are being written: nothing is left ----
mkfifo "$TMP/fifo"
"$PG" tokenize --tokenizer "$M" --quiet --out "$TMP/sig" --val-docs 10 --shard-tokens 2000 "$TMP/fifo" > /dev/null 2>&1 &
pid=$!
exec 3> "$TMP/fifo"
cat "$D/many.jsonl" >&3
# wait (up to 60 s, never asserting on time) until the first batch was written to temporary shards
for _ in $(seq 600); do ls "$TMP/sig" 2>/dev/null | grep -q '\.tmp\.' && break; sleep 0.1; done
saw=$(ls "$TMP/sig" 2>/dev/null | grep -c '\.tmp\.')
kill -TERM $pid; exec 3>&-; wait $pid; rc=$?
left=$(ls -A "$TMP/sig" 2>/dev/null | tr '\n' ' ')
if [ "$saw" -gt 0 ] && [ $rc -eq 143 ] && [ -z "$left" ]; then echo "ok tokenize/sigterm_writes_nothing"
else echo "FAIL tokenize/sigterm_writes_nothing: temporary shards seen $saw, exit $rc, left: $left"; fi

# ---- SIGTERM at 150 moments spread over a whole run (opening a shard, writing, renaming the set into
# place): the two new directories are gone or the inner one holds the complete set, never a temporary
# or a partial set.
# (A signal between creating a temporary shard and registering it once left that shard behind.)
rm -rf "$TMP/all"
tok --quiet --out "$TMP/all" --val-docs 10 --shard-tokens 2000 "$D/many.jsonl" > /dev/null
n_all=$(ls -A "$TMP/all" | wc -l)
why=""; killed=0
for i in $(seq 0 149); do
  rm -rf "$TMP/sigm"
  "$PG" tokenize --tokenizer "$M" --quiet --out "$TMP/sigm/out" --val-docs 10 --shard-tokens 2000 "$D/many.jsonl" > /dev/null 2>&1 &
  pid=$!
  sleep "$(printf '0.%03d' $((i * 2)))"
  kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
  n=$(ls -A "$TMP/sigm/out" 2>/dev/null | wc -l)
  [ $rc -eq 143 ] && [ "$n" -eq 0 ] && [ -e "$TMP/sigm" ] && why="$why at ${i}: killed, a new directory left;"
  t=$(ls -A "$TMP/sigm/out" 2>/dev/null | grep -c '\.tmp\.')
  case $rc in
    # a signal during the final rename is held back until the whole set is in place
    143) killed=$((killed + 1)); { [ "$n" -eq 0 ] || { [ "$n" -eq "$n_all" ] && [ "$t" -eq 0 ]; }; } ||
           why="$why at ${i}: killed, $n files left ($t temporary);" ;;
    0) [ "$n" -eq "$n_all" ] && [ "$t" -eq 0 ] || why="$why at ${i}: exit 0 with $n of $n_all files ($t temporary);" ;;
    *) why="$why at ${i}: exit $rc;" ;;
  esac
done
[ "$killed" -gt 0 ] || why="$why no run was killed before it finished;"
if [ -z "$why" ]; then echo "ok tokenize/sigterm_any_moment"; else echo "FAIL tokenize/sigterm_any_moment:$why"; fi

# ---- progress line (stderr) and summary (stdout) ----
rm -rf "$TMP/o"
"$PG" tokenize --tokenizer "$M" --out "$TMP/o" --val-docs 50 --shard-tokens 40000 "$CORPUS" > "$TMP/p.out" 2> "$TMP/p.err"
rm -rf "$TMP/o"
"$PG" tokenize --tokenizer "$M" --out "$TMP/o" --val-docs 50 --shard-tokens 40000 --quiet "$CORPUS" > "$TMP/q.out" 2> "$TMP/q.err"
tv=$("$PY" -c 'import struct,sys; print(sum(struct.unpack("<3i", open(f,"rb").read(12))[2] for f in sys.argv[1:]))' "$TMP/ref_fw"/fineweb_val_*)
tt=$("$PY" -c 'import struct,sys; print(sum(struct.unpack("<3i", open(f,"rb").read(12))[2] for f in sys.argv[1:]))' "$TMP/ref_fw"/fineweb_train_*)
nt=$(ls "$TMP/ref_fw" | grep -c train)
why=""
grep -q "^tokenize: 300 docs, $((tv + tt)) tokens, [0-9.]* MB, [0-9.]* MB/s" "$TMP/p.err" || why="$why no progress line on stderr: $(cat "$TMP/p.err");"
grep -q "^tokenize: 300 docs (50 val, 250 train), $((tv + tt)) tokens (val $tv in 1 file, train $tt in $nt files) -> $TMP/o\$" "$TMP/p.out" \
  || why="$why summary: $(head -1 "$TMP/p.out");"
grep -q "^tokenize: 1.0 MB of text in .*; 0 empty kept, 0 empty skipped, 0 bad lines skipped, 0 lines with UTF-8 replaced, 0 blank lines ignored$" "$TMP/p.out" \
  || why="$why second summary line: $(tail -1 "$TMP/p.out");"
[ -s "$TMP/q.err" ] && why="$why --quiet printed on stderr: $(cat "$TMP/q.err");"
[ "$(head -1 "$TMP/p.out")" = "$(head -1 "$TMP/q.out")" ] || why="$why --quiet changed the summary;"
if [ -z "$why" ]; then echo "ok tokenize/progress_summary"; else echo "FAIL tokenize/progress_summary:$why"; fi
