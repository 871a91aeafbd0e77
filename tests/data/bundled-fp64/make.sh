#!/usr/bin/env bash
# Rebuilds the float64 reference of the bundled model on the committed test images. float64 reaches no
# oneDNN kernel, so these numbers are the same on every CPU; KernelTests compares the default (fp32)
# path with them, so a wrong kernel on a new machine shows up in the main job, not only in parity tests.
# Run from the repository root after the bundled model changes: bash tests/data/bundled-fp64/make.sh
set -euo pipefail
ae=models/fashion-mnist/autoencoder.safetensors
out=tests/data/bundled-fp64
./svgd encode --autoencoder "$ae" --images tests/data/fashion-mnist --precision fp64 --batch-size 40 --out "$out/latent.safetensors"
./svgd decode --autoencoder "$ae" --latents "$out/latent.safetensors" --precision fp64 --batch-size 40 --out "$out/images.safetensors"
