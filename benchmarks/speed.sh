#!/usr/bin/env bash
# The README performance table: each lever on and off, 2 threads, batch 8 (the official timings' setup: fp32).
# Levers: keep_freed_memory (glibc keeps freed blocks), channels_last, depthwise_weight_grad=compiled,
# precision=bf16 (autocast), gradient_checkpointing (cells recomputed in the backward pass), bn_swish (fused BatchNorm-Swish;
# recompute: it keeps only its input for the backward pass).
set -euo pipefail
out=${1:-runs/speed}
mkdir -p "$out"
small=benchmarks/recipes/nvae_cifar_small.yaml
paper="recipes/nvae_cifar10.yaml --config benchmarks/recipes/random_cifar_data.yaml --trainer.precision fp32"
common="--bench.batch_size 8 --bench.threads 2 --bench.phases [train]"
off="--trainer.speed.keep_freed_memory false"
fast="--trainer.speed.channels_last true --trainer.speed.depthwise_weight_grad compiled"
run() { name=$1; shift; vaezoo benchmark "$@" --bench.out "$out/$name.json" > /dev/null; }
run small_1_base $small $common --bench.repeats 7 $off
run small_2_keep_freed $small $common --bench.repeats 7 --trainer.speed.keep_freed_memory true
run small_3_fast $small $common --bench.repeats 7 --trainer.speed.keep_freed_memory true $fast
run small_4_fast_without_keep_freed $small $common --bench.repeats 7 $off $fast
run paper_1_base $paper $common --bench.repeats 3 --bench.warmup 1 $off
run paper_2_keep_freed $paper $common --bench.repeats 3 --bench.warmup 1
run paper_3_fast $paper $common --bench.repeats 3 --bench.warmup 1 $fast
run paper_4_fast_bf16 $paper $common --bench.repeats 3 --bench.warmup 1 $fast --trainer.precision bf16
run paper_5_fast_checkpointing $paper $common --bench.repeats 3 --bench.warmup 1 $fast --trainer.speed.gradient_checkpointing true
run paper_6_fast_bf16_checkpointing $paper $common --bench.repeats 3 --bench.warmup 1 $fast --trainer.precision bf16 --trainer.speed.gradient_checkpointing true
run paper_7_fast_bn_swish_fused $paper $common --bench.repeats 3 --bench.warmup 1 $fast --trainer.speed.bn_swish fused
run paper_8_fast_bn_swish_recompute $paper $common --bench.repeats 3 --bench.warmup 1 $fast --trainer.speed.bn_swish recompute
python - "$out" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())["train"]
    print(f"{path.stem:34s} {r['median_s']:8.3f} s/step  {r['images_per_s']:7.1f} img/s  peak RSS {r['peak_rss_gib']:.2f} GiB")
PY
