#!/bin/sh
# Throughput of pipespool's queue commands side by side with fspl's.
# Usage: testdata/queue/bench.sh PIPESPOOL_BINARY [WORKDIR]
# Needs ~8 GiB free in WORKDIR. Prints one line per run; docs/queue.md has
# the numbers measured on the project machine.
set -eu
PS=$(readlink -f "$1")
W=${2:-/tmp/pipespool-queue-bench}
REPS=${REPS:-5}
mkdir -p "$W" && cd "$W"
[ -f big ] || head -c 2G /dev/urandom > big
t() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }

echo "== prepare -i big (2 GiB) > file"
for r in $(seq "$REPS"); do
  for tool in fspl "$PS"; do
    rm -f out.fspl; sync
    echo "$(basename "$tool") $(/usr/bin/time -f %e sh -c "$tool prepare -s - -i big > out.fspl" 2>&1)"
  done
done
rm -f out.fspl

echo "== queue-process of a 2 GiB payload into cat >/dev/null"
rm -rf qf qp; fspl queue-init -q qf; "$PS" queue-init -q qp
fspl prepare -s - -i big > qf/jobs/fspl-big.fspl; cp qf/jobs/fspl-big.fspl qp/jobs/
for r in $(seq "$REPS"); do
  for tool in fspl "$PS"; do
    d=qp; [ "$tool" = fspl ] && d=qf
    echo 1 > $d/nextseq
    echo "$(basename "$tool") $(/usr/bin/time -f %e $tool queue-process -q $d --never-delete sh -- -c 'cat >/dev/null' 2>&1)"
  done
done
rm -rf qf qp

echo "== 2000 tiny packets run by /bin/true"
rm -rf tf tp; fspl queue-init -q tf; "$PS" queue-init -q tp
echo 1 > seq
for i in $(seq 2000); do fspl prepare -s seq > tf/jobs/fspl-$i.fspl; done
cp tf/jobs/* tp/jobs/
for r in $(seq "$REPS"); do
  for tool in fspl "$PS"; do
    src=tp; [ "$tool" = fspl ] && src=tf
    rm -rf run; cp -a $src run; sync
    echo "$(basename "$tool") $(/usr/bin/time -f %e $tool queue-process -q run /bin/true 2>&1)"
  done
done
rm -rf tf tp run seq
