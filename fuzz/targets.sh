#!/usr/bin/env bash
# targets.sh: prints the fuzz targets, one per line: every fuzz/fuzz_<target>.c but the support code
# (the Makefile's FUZZ_TARGETS, fuzz/run.sh and tests/cli/fuzz_replay.sh all read this list)
cd "$(dirname "$0")/.." && ls fuzz/fuzz_*.c | sed -n 's|^fuzz/fuzz_\(.*\)\.c$|\1|p' | grep -v '^support$'
