#!/usr/bin/env bash
# xcheck_records.sh [MIRROR_GIT_DIR]: the reference model and quantisers (tests/reference/, which
# pgolf's tests hold pgolf to) against the records' own PyTorch code, on the CPU: writes the record
# scripts into .ref/ (git-ignored, scripts/record_refs.sh), then runs tests/reference/xcheck.py for
# every adapter tests/reference/records/rec_<name>.py (record .ref/<name up to the first _>.py) and
# tests/reference/xcheck_export.py for every export scheme. Not part of `make test`: the record
# scripts are not in the repository. Prints one line per check and `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
bash scripts/record_refs.sh .ref "${1:-/work/.mirror/openai+parameter-golf/repo}" || exit 1
pass=0; fail=0
run() { # label, command...
  local label=$1; shift
  local out; out=$("$@" 2>&1); local rc=$?
  if [ $rc -eq 0 ]; then pass=$((pass + 1)); echo "ok $label: $(echo "$out" | tail -n1)"
  else fail=$((fail + 1)); echo "FAIL $label:"; echo "$out" | tail -n 15 | sed 's/^/    /'; fi
}
for f in tests/reference/records/rec_*.py; do
  name=$(basename "$f" .py); name=${name#rec_}
  run "xcheck/$name" $PY tests/reference/xcheck.py "$name" ".ref/${name%%_*}.py"
done
for name in baseline pr65 pr315 pr453 pr1311 pr1392 pr187; do
  run "xcheck_export/$name" $PY tests/reference/xcheck_export.py "$name" ".ref/$name.py"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
