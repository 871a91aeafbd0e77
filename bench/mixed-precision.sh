#!/usr/bin/env bash
# bf16 mixed precision against fp32 in training: the same run in fp32 with two seeds (the run-to-run
# noise) and in bf16, logging a held-out eval loss every 25 steps; prints the eval table and steps/s.
#   bench/mixed-precision.sh dit|autoencoder [steps] [svgd command]
#   dit:         svg-xs on the bundled model's Fashion-MNIST latents, batch 64, eval = flow loss on 512 test latents
#   autoencoder: svg-resnet18-32px on Fashion-MNIST images, batch 32, L1 only, eval = L1 on 256 test images
# Needs data/fmnist-train-10k and data/fmnist-test-1k (svgd import-idx --limit 10000 / 1000; README).
# Steps/s here include the eval passes; the README's speed rows come from short runs without them.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:?dit or autoencoder}
steps=${2:-500}
svgd=${3:-./svgd}
out=runs/mixed-precision
mkdir -p "$out"
runs=("fp32 0" "bf16 0" "fp32 1")
case $kind in
  dit)
    ae=models/fashion-mnist/autoencoder.safetensors
    [ -d "$out/cache-train" ] || $svgd cache-latents --autoencoder $ae --images data/fmnist-train-10k --out "$out/cache-train"
    [ -d "$out/cache-test" ] || $svgd cache-latents --autoencoder $ae --images data/fmnist-test-1k --out "$out/cache-test"
    metric=eval_loss
    train() { $svgd train --latents "$out/cache-train" --out "$1" --preset svg-xs --steps "$steps" --batch-size 64 --lr 2e-4 \
      --seed "$2" --precision "$3" --eval-every 25 --eval-latents "$out/cache-test" --sample-every 0 --checkpoint-every 0; } ;;
  autoencoder)
    metric=eval_l1
    train() { $svgd train-autoencoder --images data/fmnist-train-10k --out "$1" --preset svg-resnet18-32px --steps "$steps" \
      --batch-size 32 --lr 2e-4 --seed "$2" --precision "$3" --eval-every 25 --eval-images data/fmnist-test-1k \
      --sample-every 0 --checkpoint-every 0 2>/dev/null; } ;;
  *) echo "bench/mixed-precision.sh: the first argument is dit or autoencoder, not '$kind'" >&2; exit 2 ;;
esac
for r in "${runs[@]}"; do
  set -- $r
  dir="$out/$kind-$1-seed$2"
  [ -f "$dir/metrics.jsonl" ] && grep -q "\"step\":$steps," "$dir/metrics.jsonl" && continue
  rm -rf "$dir"
  train "$dir" "$2" "$1"
done
evals() { grep -o "\"step\":[0-9]*\|\"$metric\":[0-9.e-]*" "$1" | paste -d' ' - - | grep "$metric" | sed "s/\"step\"://; s/\"$metric\"://"; }
printf '\n%s: %s\n\n| step |' "$kind" "$metric"; for r in "${runs[@]}"; do set -- $r; printf ' %s seed %s |' "$1" "$2"; done
printf '\n|---:|---:|---:|---:|\n'
paste -d' ' <(evals "$out/$kind-fp32-seed0/metrics.jsonl") <(evals "$out/$kind-bf16-seed0/metrics.jsonl" | cut -d' ' -f2) \
  <(evals "$out/$kind-fp32-seed1/metrics.jsonl" | cut -d' ' -f2) | awk '{printf "| %s | %.4f | %.4f | %.4f |\n", $1, $2, $3, $4}'
echo
for r in "${runs[@]}"; do
  set -- $r
  tail -1 "$out/$kind-$1-seed$2/metrics.jsonl" | grep -o '"seconds":[0-9.]*' | awk -v n="$steps" -v name="$1 seed $2" -F: '{printf "%s: %.2f steps/s (eval passes included)\n", name, n / $2}'
done
