#!/usr/bin/env bash
# Interleaved before/after benchmarks of two checkouts of ekm (the hot paths
# a refactor could slow down), summarised with benchstat:
#
#   scripts/bench-ab.sh BEFORE_DIR AFTER_DIR OUT_DIR
#
# e.g. git worktree add /tmp/ekm-before <commit>; scripts/bench-ab.sh
# /tmp/ekm-before . /tmp/bench. Needs benchstat
# (go install golang.org/x/perf/cmd/benchstat@latest).
set -euo pipefail
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); out=$3
mkdir -p "$out"; rm -f "$out"/*.txt
run() { # side dir
  (cd "$2" && go test -run '^$' -bench '(Seal|Open)/1KiB' -benchtime 300ms ./envelope) >>"$out/envelope-$1.txt"
  (cd "$2" && go test -run '^$' -bench 'Key' -benchtime 300ms ./keyring) >>"$out/keyring-$1.txt"
  (cd "$2" && go test -run '^$' -bench 'Crypto1KiB' -benchtime 1s ./dataplane) >>"$out/dataplane-$1.txt"
}
for _ in 1 2 3 4 5; do run before "$before"; run after "$after"; done
for _ in 1 2 3; do
  (cd "$before" && go test -run '^$' -bench '256MiB' -benchtime 2x ./dataplane) >>"$out/stream-before.txt"
  (cd "$after" && go test -run '^$' -bench '256MiB' -benchtime 2x ./dataplane) >>"$out/stream-after.txt"
done
for b in envelope keyring dataplane stream; do benchstat "$out/$b-before.txt" "$out/$b-after.txt"; done
