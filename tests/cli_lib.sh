# lib.sh: helpers for the shell tests of the pgolf command line. Sourced, not run.
# Each check prints one result line in the format of tests/test.h.
PG="${PGOLF_BIN:-build/pgolf}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# expect_error NAME PATTERN CMD...: CMD must exit non-zero, print exactly one line on stderr
# (`pgolf: error: ...`) that contains PATTERN.
expect_error() {
  local name=$1 pat=$2; shift 2
  local out err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  local nl; nl=$(printf '%s\n' "$err" | grep -c .)
  if [ $rc -eq 0 ]; then echo "FAIL $name: exit status 0"; return; fi
  if [ "$nl" -ne 1 ]; then echo "FAIL $name: expected one error line, got $nl: $err"; return; fi
  case "$err" in
    "pgolf: error: "*"$pat"*) echo "ok $name";;
    *) echo "FAIL $name: error line '$err' lacks '$pat'";;
  esac
}
