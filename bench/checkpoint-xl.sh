#!/usr/bin/env bash
# SVG-XL training checkpoint: save and bit-exact resume (issue 28 item 7), one process each under
# /usr/bin/time -v for its peak memory. Needs about 14-20 GB of RAM per process and about 11 GB of disk
# per checkpoint; on a shared machine the script holds /tmp/svgd-bigmem.lock from the first phase to the
# last, so one big job runs at a time and nothing comes between saving and resuming.
#   bench/checkpoint-xl.sh [fp32|bf16] [preset] [dir] [--grid N --channels N] [--no-step]
# (--grid 4 --channels 72: the tiny test autoencoder's latents, far fewer activations than 16x16x392;
# --no-step: no training step, the optimiser state derived from the weights: the round trip alone, where a
# training step does not fit in memory.)
# Each phase stops itself (exit 137) when the machine's available memory falls under
# SVGD_BENCH_MIN_AVAILABLE_GB (default 1.5), before the OOM killer picks another process.
# Prints the checkpoint size, save and load times, each phase's peak RSS and whether the resumed run
# equals the uninterrupted one bit for bit; the checkpoint is deleted after (KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/.."
precision=${1:-fp32}
preset=${2:-svg-xl}
dir=${3:-runs/checkpoint-$preset-$precision}
shift $(( $# < 3 ? $# : 3 ))
dotnet build bench/SvgDiffusion.Bench -c Release -nologo -v q -clp:ErrorsOnly
bench="dotnet bench/SvgDiffusion.Bench/bin/Release/net10.0/SvgDiffusion.Bench.dll checkpoint"
mkdir -p "$dir"
exec 9>/tmp/svgd-bigmem.lock
flock 9
rc=0
for phase in straight resume; do
  /usr/bin/time -v -o "$dir/$phase.time" $bench $phase --dir "$dir" --preset "$preset" --precision "$precision" "$@" \
    | tee "$dir/$phase.log" || { rc=$?; echo "$phase exited $rc"; }
  grep -E "Maximum resident set size|Elapsed \(wall clock\)|Exit status" "$dir/$phase.time" | sed "s/^\s*/$phase: /"
  [ $rc -eq 0 ] || break
done
[ "${KEEP:-0}" = 1 ] || rm -f "$dir/step1.safetensors"
exit $rc
