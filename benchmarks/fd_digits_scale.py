"""The scale of ``fd_digits``: real digits against the bundled digits' training-set statistics, at several n.

    python benchmarks/fd_digits_scale.py

Prints the Fréchet distance in DigitClassifier features of (a) the 500 test digits, grey and fixed-seed binarised,
(b) random subsets of n training digits themselves (the bias of a finite n: real data at n = 500 is not at 0),
(c) uniform noise images, each against the statistics of all 4,500 training digits (grey, as BundledMNIST gives them).
"""

from __future__ import annotations

import torch
from vaezoo_fid import DigitClassifier

from vaezoo.config import build
from vaezoo.evaluation.sample_quality import FeatureStatistics, statistics_distance


def main() -> None:
    torch.manual_seed(0)
    digits = DigitClassifier()
    grey = build({"class_path": "BundledMNIST", "init_args": {"binarize": False}}, kind="dataset")
    binary = build({"class_path": "BundledMNIST"}, kind="dataset")
    train = grey.train_dataset().tensors[0]
    with torch.no_grad():
        features = torch.cat([digits(chunk) for chunk in train.split(500)])
        reference = FeatureStatistics.of(features)

        def fd(images: torch.Tensor) -> float:
            return statistics_distance(
                FeatureStatistics.of(torch.cat([digits(c) for c in images.split(500)])), reference
            )

        print(
            f"reference: {len(train)} training digits (grey); DigitClassifier {digits.protocol()['weights_sha256'][:16]}"
        )
        print(f"500 test digits, grey:       {fd(grey.test_dataset().tensors[0]):.3f}")
        print(f"500 test digits, binarised:  {fd(binary.test_dataset().tensors[0]):.3f}")
        for n in (100, 500, 2000, 4500):
            values = [fd(train[torch.randperm(len(train))[:n]]) for _ in range(3)]
            print(f"{n:>4} training digits (3 draws): " + ", ".join(f"{v:.3f}" for v in values))
        print(f"500 uniform-noise images:    {fd(torch.rand(500, 1, 28, 28)):.3f}")


if __name__ == "__main__":
    main()
