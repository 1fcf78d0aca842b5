"""Sample quality: the Fréchet distance and KID against independent numpy/scipy computations, streamed and merged
statistics, the reference cache, the digit classifier, the Inception loading, and ``vaezoo evaluate --metrics``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import TensorDataset
from vaezoo_datasets import BundledMNIST
from vaezoo_fid import DigitClassifier, InceptionV3
from vaezoo_fid.digits import shipped_weights
from vaezoo_fid.inception import WEIGHTS_NAME, WEIGHTS_URL, random_weights_file

import vaezoo
from vaezoo.cli import main
from vaezoo.errors import VaezooError
from vaezoo.evaluation.sample_quality import (
    FeatureStatistics,
    frechet_distance,
    kernel_distance,
    precision_recall,
    reference_statistics,
    statistics_distance,
)
from vaezoo.hub.store import vaezoo_home


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula: numpy means and covariances, scipy's matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead features make the product singular: scipy warns, and is still right
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def fd(a: np.ndarray, b: np.ndarray) -> float:
    return statistics_distance(FeatureStatistics.of(torch.from_numpy(a)), FeatureStatistics.of(torch.from_numpy(b)))


def test_frechet_distance_matches_scipy_is_symmetric_and_zero_on_itself():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    expected = scipy_fd(a, b)
    assert expected > 1
    assert fd(a, b) == pytest.approx(expected, rel=1e-9)
    assert fd(b, a) == pytest.approx(expected, rel=1e-9)
    assert abs(fd(a, a)) < 1e-9


def test_frechet_distance_closed_form_of_gaussians():
    # two Gaussians whose covariances commute (diagonal in one rotated basis): the distance is
    # |mu_a - mu_b|^2 + sum_i (sqrt(s_a,i) - sqrt(s_b,i))^2
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    cov_a, cov_b = q @ np.diag([1.0, 4.0, 9.0]) @ q.T, q @ np.diag([4.0, 1.0, 0.25]) @ q.T
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    closed = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 0.5) ** 2
    got = frechet_distance(*(torch.from_numpy(t) for t in (mu_a, cov_a, mu_b, cov_b)))
    assert got == pytest.approx(closed, rel=1e-10)
    # singular covariances (dead features): two orthogonal unit variances, tr(S_a + S_b) - 2 tr(0) = 2
    singular = frechet_distance(torch.zeros(3), torch.diag(torch.tensor([1.0, 0, 0])), torch.zeros(3),
                                torch.diag(torch.tensor([0, 1.0, 0])))  # fmt: skip
    assert singular == pytest.approx(2.0, abs=1e-12)


def test_streamed_statistics_equal_numpy_and_merged_shards_equal_one():
    features = torch.from_numpy(np.random.default_rng(2).normal(size=(103, 5)) * 3 + 7)
    streamed = FeatureStatistics.empty(5)
    for chunk in features.split(7):
        streamed.update(chunk)
    assert streamed.count == 103
    np.testing.assert_allclose(streamed.mean.numpy(), features.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(streamed.covariance.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-10)
    shards = FeatureStatistics.of(features[:40]).merged(FeatureStatistics.of(features[40:]))
    np.testing.assert_allclose(shards.covariance.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-10)
    assert shards.count == 103


def test_all_reduce_round_trips_through_a_process_group(tmp_path):
    """The packing of the sums for the collective (the sum over ranks is torch.distributed's; shards merging into one
    is tested above). A one-process gloo group: spawning processes would cost seconds."""
    import torch.distributed as dist

    features = torch.from_numpy(np.random.default_rng(3).normal(size=(7, 3)))
    stats = FeatureStatistics.of(features)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        stats.all_reduce()
    finally:
        dist.destroy_process_group()
    assert stats.count == 7
    np.testing.assert_allclose(stats.mean.numpy(), features.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-10)


def numpy_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased squared MMD with k(a, b) = (a.b / d + 1)^3, by explicit sums over pairs."""
    d, m = x.shape[1], len(x)
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    return within - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2


def test_kid_equals_the_unbiased_mmd_by_pairs():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) + 0.3
    mean, spread, size = kernel_distance(torch.from_numpy(x), torch.from_numpy(y), subsets=3, subset_size=50)
    assert size == 12 and spread == pytest.approx(0, abs=1e-12)  # every subset is the whole set: one value
    assert mean == pytest.approx(numpy_mmd(x, y), rel=1e-10)


def precision_recall_by_pairs(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Improved precision/recall from its definition, pair by pair: a row's radius is the k-th smallest distance to
    the other rows of its set; a row is covered when it is within the radius of some row of the other set."""

    def radii(rows):
        return [sorted(math.dist(r, s) for j, s in enumerate(rows) if j != i)[k - 1] for i, r in enumerate(rows)]

    def covered(points, centres, radius):
        return sum(any(math.dist(p, c) <= rad for c, rad in zip(centres, radius, strict=True)) for p in points)

    return covered(fake, real, radii(real)) / len(fake), covered(real, fake, radii(fake)) / len(real)


def test_precision_recall_equals_its_definition_pair_by_pair():
    rng = np.random.default_rng(7)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) * 0.8 + 0.9
    for k in (1, 3, 5):
        got = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=k, chunk=7)  # chunks of odd size
        expected = precision_recall_by_pairs(real, fake, k)
        assert got == pytest.approx(expected, abs=1e-12), k
        assert 0 < got[0] < 1 and 0 < got[1] < 1  # a case where both are informative
    # samples that are the data are all real and cover all of it; samples far away are neither
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(real)) == (1.0, 1.0)
    assert precision_recall(torch.from_numpy(real), torch.from_numpy(real + 100.0)) == (0.0, 0.0)
    # a sample exactly at a real row's radius lies in its ball (the manifold's balls are closed)
    line = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)  # each radius 1 with k = 1
    assert precision_recall(line, torch.tensor([[4.0], [10.0]], dtype=torch.float64), k=1) == (0.5, 1.0)
    with pytest.raises(ValueError, match="more than 3 feature rows"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2))


@pytest.fixture(scope="module")
def digits():
    return DigitClassifier()


@pytest.fixture(scope="module")
def mnist():
    data = BundledMNIST()
    return data.train_dataset().tensors, data.test_dataset().tensors


def test_digit_classifier_accuracy_on_the_500_test_digits(digits, mnist):
    _, (x, y) = mnist
    with torch.no_grad():
        accuracy = float((digits.classify(x).argmax(1) == y).float().mean())
    assert len(y) == 500 and accuracy >= 0.95  # 0.970 on these binarised digits (0.974 grey), see the README
    assert digits.protocol()["weights_sha256"] == hashlib.sha256(shipped_weights().read_bytes()).hexdigest()
    assert shipped_weights().stat().st_size < 500_000


def test_fd_digits_ranks_real_digits_before_noise_and_an_untrained_model(digits, mnist):
    (train, _), (test, _) = mnist
    with torch.no_grad():
        reference = FeatureStatistics.of(digits(train))
        real = statistics_distance(FeatureStatistics.of(digits(test)), reference)
        noise = statistics_distance(FeatureStatistics.of(digits(torch.rand(500, 1, 28, 28))), reference)
        torch.manual_seed(0)
        untrained = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16).eval()
        samples = statistics_distance(FeatureStatistics.of(digits(untrained.sample(500))), reference)
    assert real * 5 < noise and real * 5 < samples, (real, noise, samples)


def test_digit_resize_rule_crops_padding_and_resizes_other_sizes(digits):
    x = torch.rand(2, 1, 28, 28)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))  # the NVAE recipes' 32x32 digits
    torch.testing.assert_close(digits(padded), digits(x), rtol=0, atol=0)
    rgb = x.expand(-1, 3, -1, -1)
    torch.testing.assert_close(digits(rgb), digits(x), rtol=1e-6, atol=1e-6)  # (x + x + x) / 3: rounding only
    big = torch.nn.functional.interpolate(x, size=(64, 64), mode="nearest")
    assert digits(big).shape == (2, 64)


def test_reference_cache_is_reused_when_valid_and_rebuilt_when_data_or_extractor_change(tmp_path, digits):
    images = torch.rand(40, 1, 28, 28)
    identity = {"spec": {"class_path": "Toy"}, "describe": "toy"}
    with torch.no_grad():
        direct = FeatureStatistics.of(digits(images))
    first = reference_statistics(TensorDataset(images), digits, data_identity=identity, split="train", batch_size=16)
    assert first.status == "computed" and first.path.is_file() and first.path.is_relative_to(vaezoo_home())
    torch.testing.assert_close(first.stats.covariance, direct.covariance, rtol=1e-10, atol=1e-12)
    assert first.info["content_sha256"] == hashlib.sha256(images.numpy().tobytes()).hexdigest()

    class Refusing(DigitClassifier):  # proves the cached statistics are read, not recomputed
        def forward(self, images):
            raise AssertionError("features recomputed")

    again = reference_statistics(TensorDataset(images), Refusing(), data_identity=identity, split="train")
    assert again.status == "cached" and again.path == first.path
    torch.testing.assert_close(again.stats.outer, first.stats.outer, rtol=0, atol=0)

    changed = images.clone()
    changed[3, 0, 5, 5] = 1 - changed[3, 0, 5, 5]  # one pixel: same spec, other content
    rebuilt = reference_statistics(TensorDataset(changed), digits, data_identity=identity, split="train")
    assert rebuilt.status == "recomputed" and "content_sha256" in rebuilt.notes[0]
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.stats.total, FeatureStatistics.of(digits(changed)).total)

    weights = load_file(str(shipped_weights()))
    weights["hidden.bias"] = weights["hidden.bias"] + 0.5
    save_file(weights, str(tmp_path / "other.safetensors"))
    other = DigitClassifier(str(tmp_path / "other.safetensors"))
    by_other = reference_statistics(TensorDataset(changed), other, data_identity=identity, split="train")
    assert by_other.status == "computed" and by_other.path != rebuilt.path
    with torch.no_grad():
        torch.testing.assert_close(by_other.stats.total, FeatureStatistics.of(other(changed)).total)

    # a file at the right place that is of something else (copied by hand, say) is recomputed, and said so
    by_other.path.write_bytes(rebuilt.path.read_bytes())
    swapped = reference_statistics(TensorDataset(changed), other, data_identity=identity, split="train")
    assert swapped.status == "recomputed" and "extractor_sha256" in swapped.notes[0]
    by_other.path.write_bytes(b"not safetensors")
    corrupt = reference_statistics(TensorDataset(changed), other, data_identity=identity, split="train")
    assert corrupt.status == "recomputed" and "unreadable" in corrupt.notes[0]
    torch.testing.assert_close(corrupt.stats.total, by_other.stats.total, rtol=0, atol=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16).eval()
    path = tmp_path_factory.mktemp("model") / "model"
    model.save_pretrained(path)
    return path


def test_evaluate_fd_digits_equals_an_independent_computation(model_dir, mnist, digits, tmp_path, capsys):
    out = tmp_path / "fd.json"
    args = ["evaluate", str(model_dir), "--data", "BundledMNIST", "--metrics", "fd_digits,kid_digits,prc_digits",
            "--n_samples", "100", "--batch_size", "64", "--temperature", "0.8", "--seed", "3", "--reference", "test",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "test ELBO" not in printed  # likelihood metrics only when asked for
    assert "fd_digits = " in printed and "not comparable with Inception FID" in printed
    assert "100 samples at temperature 0.8, decoder mean, no BN re-adjustment" in printed
    assert "test split, 500 images (computed statistics)" in printed
    figures = {r["metric"]: r for r in json.loads(out.read_text())["sample_quality"]}
    record = figures["fd_digits"]
    assert record["extractor_sha256"] == digits.protocol()["weights_sha256"]
    assert record["reference"]["size"] == 500 and record["n_generated"] == 100
    assert record["decoder_output"] == "mean" and record["resize"] == digits.protocol()["resize"]
    # the same samples drawn by hand (seed 3, batches of 64 and 36), scored by numpy and scipy
    model = vaezoo.load(f"local-dir:{model_dir}")
    with torch.no_grad():
        torch.manual_seed(3)
        samples = torch.cat([model.sample(n, temperature=0.8) for n in (64, 36)])
        generated, reference = digits(samples).double().numpy(), digits(mnist[1][0]).double().numpy()
    assert record["value"] == pytest.approx(scipy_fd(generated, reference), rel=1e-6)
    kid = figures["kid_digits"]
    assert kid["subset_size"] == 100 and kid["subsets"] == 100
    # precision/recall of the same samples against the 500 test digits, by the definition
    prc = figures["prc_digits"]
    assert (prc["precision"], prc["recall"]) == pytest.approx(precision_recall_by_pairs(reference, generated, 3),
                                                              abs=1e-9)  # fmt: skip
    assert "precision " in printed and "Kynkaanniemi" in prc["label"] and prc["k"] == 3
    # the second run reads the cached reference statistics and gives the same figure
    assert main([*args, "--metrics", "fd_digits"]) == 0
    assert "(cached statistics)" in capsys.readouterr().out
    assert json.loads(out.read_text())["sample_quality"][0]["value"] == record["value"]


def test_missing_inception_weights_is_one_line_exit_2_nothing_written(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VAEZOO_FID_WEIGHTS", raising=False)
    out = tmp_path / "fid.json"
    started = time.perf_counter()
    assert main(["evaluate", str(model_dir), "--data", "BundledMNIST", "--metrics", "fid", "--out", str(out)]) == 2
    assert time.perf_counter() - started < 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and WEIGHTS_NAME in err and WEIGHTS_URL in err and "--fid_weights" in err
    assert not out.exists() and not (vaezoo_home() / "reference_statistics").exists()
    monkeypatch.setenv("VAEZOO_FID_WEIGHTS", str(tmp_path / "nowhere.pth"))
    assert main(["evaluate", str(model_dir), "--data", "BundledMNIST", "--metrics", "kid", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere.pth" in err and "$VAEZOO_FID_WEIGHTS" in err
    assert not out.exists()
    assert main(["evaluate", str(model_dir), "--data", "BundledMNIST", "--metrics", "fd_digit"]) == 2
    assert "did you mean fd_digits" in capsys.readouterr().err


def test_inception_loads_a_user_file_with_the_fid_rules(tmp_path):
    path = random_weights_file()
    extractor = InceptionV3(str(path))
    saved = torch.load(path, weights_only=True)
    loaded = extractor.net.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in saved.items()) and set(loaded) == set(saved)
    assert extractor.protocol()["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    # what the network receives: grey repeated to three channels, round(255 x) as uint8, so values within half a
    # grey level of each other are scored alike (the network itself is torch-fidelity's; the contract test runs it)
    seen = []
    extractor.net.forward = lambda pixels: seen.append(pixels) or (torch.zeros(len(pixels), 2048),)
    levels = torch.randint(0, 256, (1, 1, 16, 16))
    grey = levels / 255
    rgb = grey.expand(-1, 3, -1, -1) + 0.3 / 255 * (torch.rand(1, 3, 16, 16) - 0.5)
    extractor(grey), extractor(rgb.clamp(0, 1))
    expected = levels.expand(-1, 3, -1, -1).to(torch.uint8)
    assert seen[0].dtype == seen[1].dtype == torch.uint8
    assert torch.equal(seen[0], expected) and torch.equal(seen[1], expected)
    (tmp_path / "text.pth").write_text("not weights")
    with pytest.raises(VaezooError, match="not a readable Inception state dict"):
        InceptionV3(str(tmp_path / "text.pth"))


def test_evaluate_under_two_processes_splits_the_samples_and_adds_their_features(model_dir, mnist, digits, tmp_path):
    """Two processes with torchrun's environment (gloo): each draws its half of the samples from its own stream (seed
    + 1000003 x rank) and the figures are those of the union, computed once by rank 0, which alone writes --out."""
    out = tmp_path / "two.json"
    port = _free_port()
    command = [sys.executable, "-m", "vaezoo", "evaluate", str(model_dir), "--data", "BundledMNIST",
               "--metrics", "fd_digits,prc_digits", "--n_samples", "50", "--batch_size", "16", "--seed", "3",
               "--reference", "test", "--out", str(out)]  # fmt: skip
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "VAEZOO_HOME": str(tmp_path / "home")}  # fmt: skip
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "fd_digits = " in outputs[0] and outputs[1].strip() == ""  # rank 1 prints nothing
    payload = json.loads(out.read_text())
    figures = {r["metric"]: r for r in payload["sample_quality"]}
    assert payload["processes"] == 2 and figures["fd_digits"]["n_generated"] == 50
    # the same 25 + 25 samples drawn by hand, each rank's in batches of 16 and 9
    model = vaezoo.load(f"local-dir:{model_dir}")
    with torch.no_grad():
        shares = []
        for rank in range(2):
            torch.manual_seed(3 + 1_000_003 * rank)
            shares.append(torch.cat([model.sample(n, temperature=1.0) for n in (16, 9)]))
        generated = digits(torch.cat(shares)).double().numpy()
        reference = digits(mnist[1][0]).double().numpy()
    assert figures["fd_digits"]["value"] == pytest.approx(scipy_fd(generated, reference), rel=1e-6)
    prc = figures["prc_digits"]
    assert (prc["precision"], prc["recall"]) == pytest.approx(precision_recall_by_pairs(reference, generated, 3),
                                                              abs=1e-9)  # fmt: skip
