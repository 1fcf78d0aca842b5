"""Train the digit classifier whose features give ``fd_digits`` (vaezoo_fid.DigitClassifier) and write its weights.

    python benchmarks/train_digit_classifier.py            # writes plugins/vaezoo_fid/digit_classifier.safetensors

Seeded and CPU-only (2 threads; about half a minute on a 2-core machine): the bundled MNIST digits' train split
(4,500 digits, BundledMNIST's default seeded split), Adam, 12 epochs of batch 64; half the batches are binarised
dynamically (models of binarised digits sample both grey means and binary images) and every batch is shifted by up to
2 pixels. The test accuracy on the 500 test digits (grey and fixed-seed binarised) goes into the file's metadata.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from vaezoo_fid.digits import DigitNet, to_digit_input

from vaezoo.config import build

OUT = Path(__file__).resolve().parents[1] / "plugins" / "vaezoo_fid" / "digit_classifier.safetensors"


def accuracy(net: DigitNet, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(to_digit_input(x)).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    started = time.perf_counter()
    data = build({"class_path": "BundledMNIST", "init_args": {"binarize": False}}, kind="dataset")
    binarised = build({"class_path": "BundledMNIST"}, kind="dataset")
    x_train, y_train = data.train_dataset().tensors
    x_test, y_test = data.test_dataset().tensors
    x_test_bin, _ = binarised.test_dataset().tensors
    net = DigitNet()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps_per_epoch = (len(x_train) + 63) // 64
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * 64 : (step + 1) * 64]
            x, y = x_train[index], y_train[index]
            if step % 2:
                x = torch.bernoulli(x, generator=generator)
            dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {accuracy(net, x_test, y_test):.4f}")
    grey, binary = accuracy(net, x_test, y_test), accuracy(net, x_test_bin, y_test)
    metadata = {
        "test_accuracy": f"{grey:.3f}",
        "test_accuracy_binarized": f"{binary:.3f}",
        "trained_by": "benchmarks/train_digit_classifier.py",
        "data": f"BundledMNIST train split ({len(x_train)} digits, split_seed 0), tested on its {len(x_test)} test digits",
        "seed": str(args.seed),
        "epochs": str(args.epochs),
    }
    state = {name: tensor.contiguous() for name, tensor in net.state_dict().items()}
    save_file(state, str(args.out), metadata=metadata)
    seconds = time.perf_counter() - started
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1024:.0f} KiB): test accuracy {grey:.3f} grey, {binary:.3f} binarised; {seconds:.0f} s"
    )


if __name__ == "__main__":
    main()
