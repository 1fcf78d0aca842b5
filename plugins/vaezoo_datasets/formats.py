"""File names of the data sets' official on-disk layouts, shared by the readers and the fake-data writers."""

from __future__ import annotations

#: the four IDX files of MNIST (optionally gzipped)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: the CIFAR-10 python version: five training batches and one test batch (pickles) in cifar-10-batches-py
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
