#!/usr/bin/env bash
# The README performance table: each lever on and off, fp32, 2 threads, batch 8 (the official timings' setup).
set -euo pipefail
out=${1:-runs/speed}
mkdir -p "$out"
small=benchmarks/recipes/nvae_cifar_small.yaml
paper="recipes/nvae_cifar10.yaml --config benchmarks/recipes/random_cifar_data.yaml --trainer.precision fp32"
common="--bench.batch_size 8 --bench.threads 2 --bench.phases [train] --bench.repeats 5 --bench.warmup 2"
vaezoo benchmark $small $common --bench.out "$out/small_base.json"
vaezoo benchmark $small $common --trainer.channels_last true --bench.out "$out/small_channels_last.json"
vaezoo benchmark $small $common --trainer.channels_last true --trainer.adamax_foreach true --bench.out "$out/small_cl_foreach.json"
vaezoo benchmark $paper $common --bench.repeats 3 --bench.warmup 1 --bench.out "$out/paper_base.json"
vaezoo benchmark $paper $common --bench.repeats 3 --bench.warmup 1 --trainer.channels_last true --bench.out "$out/paper_channels_last.json"
vaezoo benchmark $paper $common --bench.repeats 3 --bench.warmup 1 --trainer.channels_last true --trainer.gradient_checkpointing true --bench.out "$out/paper_cl_checkpointing.json"
python - "$out" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())["train"]
    print(f"{path.stem:28s} {r['median_s']:8.3f} s/step  {r['images_per_s']:7.1f} img/s  peak RSS {r['peak_rss_gib']:.2f} GiB")
PY
