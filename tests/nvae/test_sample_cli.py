"""``vaezoo sample`` on an NVAE: ``--readjust_bn`` re-estimates exactly the sampling path's BatchNorm statistics from
samples at the sampling temperature, and ``--temperature [t0, t1, ...]`` reaches the model as one value per group.

The model is a saved ``test-nvae`` (three latent groups, BatchNorm in its encoder and decoder). The command's model
object is captured by wrapping ``open_model``, so its buffers can be read after ``main`` returns.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import vaezoo
import vaezoo.commands.sample as sample_command
from vaezoo.cli import main

#: the decoder path a prior sample runs through; everything else (stem, preprocess, encoder, posteriors, flows) is not
SAMPLING_PATH = ("decoder_tower.", "postprocess.", "decoder_head.", "priors.")
#: BN momentum of NVAE (the official code uses 0.05; torch's default is 0.1)
MOMENTUM = 0.05


@pytest.fixture(scope="module")
def saved_nvae(tmp_path_factory):
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")
    # a few training-mode passes on data, so that the running statistics are not torch's (0, 1) initial values
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *model.image_shape).round())
    model.eval()
    folder = tmp_path_factory.mktemp("models") / "test-nvae"
    model.save_pretrained(folder)
    return folder


def _batch_norms(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def _buffers(model):
    return {
        n: b.detach().clone() for n, b in model.named_buffers() if n.rsplit(".", 1)[-1].startswith(("running", "num_"))
    }


def _record_inputs(layer, inputs):
    """Record the training-mode inputs of a BN layer (the readjustment passes, not the final eval-mode sample)."""

    def hook(module, args):
        if module.training:
            inputs.append(args[0].detach().clone())

    return layer.register_forward_pre_hook(hook)


def test_readjust_bn_updates_the_sampling_path_with_the_ema_of_temperature_t_statistics(
    saved_nvae, tmp_path, monkeypatch
):
    iterations, batch, temperature = 4, 8, 0.6
    reference = vaezoo.load(f"local-dir:{saved_nvae}")
    before = _buffers(reference)
    norms = _batch_norms(reference)
    decoder = [n for n in norms if n.startswith(SAMPLING_PATH)]
    encoder = [n for n in norms if not n.startswith(SAMPLING_PATH)]
    assert decoder and encoder and all(m.momentum == MOMENTUM for m in norms.values())
    watched = [decoder[-1], next(n for n in decoder if n.startswith("decoder_tower.") and "bn_in" in n)]

    # hook the watched layers of the command's own model as it is opened, and keep the model
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in watched}
    opened = []
    original = sample_command.open_model

    def open_and_hook(*args, **kwargs):
        model, data = original(*args, **kwargs)
        layers = _batch_norms(model)
        for name in watched:
            _record_inputs(layers[name], inputs[name])
        opened.append(model)
        return model, data

    monkeypatch.setattr(sample_command, "open_model", open_and_hook)
    out = tmp_path / "grid.png"
    argv = ["sample", str(saved_nvae), "--n", "4", "--temperature", str(temperature), "--readjust_bn", str(iterations),
            "--readjust_batch", str(batch), "--seed", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0 and out.is_file()
    saved = _buffers(vaezoo.load(f"local-dir:{saved_nvae}"))  # the folder is unchanged: readjustment is in memory
    assert all(torch.equal(b, saved[n]) for n, b in before.items())

    (model,) = opened
    assert not model.training  # back in eval mode after the readjustment
    after = _buffers(model)
    for name in decoder:
        assert int(after[f"{name}.num_batches_tracked"]) == int(before[f"{name}.num_batches_tracked"]) + iterations
        assert not torch.equal(after[f"{name}.running_mean"], before[f"{name}.running_mean"]), name
        assert not torch.equal(after[f"{name}.running_var"], before[f"{name}.running_var"]), name
    for name in encoder:
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{name}.{buffer}"], before[f"{name}.{buffer}"]), f"{name}.{buffer} changed"

    # the running statistics are the EMA (momentum 0.05) of the batch statistics the layer saw, computed here
    for name in watched:
        seen = inputs[name]
        assert len(seen) == iterations and all(x.shape[0] == batch for x in seen)
        mean, var = before[f"{name}.running_mean"].double(), before[f"{name}.running_var"].double()
        for x in seen:
            x = x.double()
            mean = (1 - MOMENTUM) * mean + MOMENTUM * x.mean(dim=(0, 2, 3))
            var = (1 - MOMENTUM) * var + MOMENTUM * x.var(dim=(0, 2, 3), unbiased=True)
        torch.testing.assert_close(after[f"{name}.running_mean"].double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after[f"{name}.running_var"].double(), var, rtol=1e-5, atol=1e-6)

    # ... and those inputs are temperature-t samples: an independent replay at t (same seed) sees the same batches,
    # one at temperature 1 does not
    def replay(t):
        replica = copy.deepcopy(reference).train()
        seen: list[torch.Tensor] = []
        _record_inputs(_batch_norms(replica)[watched[0]], seen)
        torch.manual_seed(3)
        with torch.no_grad():
            for _ in range(iterations):
                replica.sample_params(batch, t)
        return seen

    for ours, theirs in zip(inputs[watched[0]], replay(temperature), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(inputs[watched[0]][0], replay(1.0)[0])


def test_per_group_temperature_reaches_the_model_as_one_value_per_group(saved_nvae, tmp_path, monkeypatch):
    temperatures = [0.5, 1.0, 0.7]
    model = vaezoo.load(f"local-dir:{saved_nvae}")
    assert model.num_groups == len(temperatures)
    calls = []
    original_sample_params = type(model).sample_params

    def recording(self, n, temperature=1.0, noise=None):
        params = original_sample_params(self, n, temperature, noise)
        calls.append((n, temperature, params.detach().clone()))
        return params

    monkeypatch.setattr(type(model), "sample_params", recording)
    out = tmp_path / "grid.png"
    argv = ["sample", str(saved_nvae), "--n", "4", "--temperature", str(temperatures), "--seed", "5", "--out", str(out)]
    assert main(argv) == 0
    (n, received, params), = calls  # fmt: skip
    assert n == 4 and received == temperatures

    # with the noise the command drew (seeded, one standard-normal tensor per group, top first), each group's noise
    # scaled by hand by its own temperature and sampled at temperature 1: the same output
    torch.manual_seed(5)
    noise = [torch.randn(shape) for shape in model.latent_shapes(4)]
    with torch.no_grad():
        expected = original_sample_params(model, 4, 1.0, [t * eps for t, eps in zip(temperatures, noise, strict=True)])
    torch.testing.assert_close(params, expected, rtol=1e-5, atol=1e-5)

    # and it is what the grid shows
    from torchvision.utils import save_image

    save_image(model.likelihood.mean(expected), tmp_path / "expected.png", nrow=2)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "expected.png")))


@pytest.mark.parametrize("values", [[0.5, 1.0], [0.5, 1.0, 0.7, 0.9], [0.5, -1.0, 0.7], [0.5, float("nan"), 0.7]])
def test_a_wrong_per_group_temperature_is_one_line_and_exit_2(saved_nvae, values, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["sample", str(saved_nvae), "--temperature", str(values), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "temperature" in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()
    if len(values) != 3:
        assert f"{len(values)} values for 3 latent groups" in err
