"""Every registered component passes the common contract at tiny size.

Parametrised over the registry itself: registering a component is enough to have it tested.
"""

from __future__ import annotations

import io

import pytest
import torch

import vaezoo
from vaezoo.interfaces import INTERFACES, Component, DataModule, FeatureExtractor

_MODULE_KINDS = [k for k, cls in INTERFACES.items() if k not in ("dataset", "feature_extractor")]


def _entries(kinds):
    registry = vaezoo.get_registry()
    return [pytest.param(e, id=f"{e.kind}:{e.name}") for k in kinds for e in registry.entries(k)]


def _run(example, module, seed=0):
    torch.manual_seed(seed)
    return example.run(module)


@pytest.mark.parametrize("entry", _entries(_MODULE_KINDS))
def test_component_contract(entry):
    cls = entry.target
    assert issubclass(cls, INTERFACES[entry.kind]), f"{entry.name} does not implement the {entry.kind} interface"
    assert issubclass(cls, Component)
    example = cls.example()
    torch.manual_seed(0)
    module = example.build()
    assert isinstance(module, cls)

    out = _run(example, module)
    assert isinstance(out, torch.Tensor)
    if example.output_shape is not None:
        assert tuple(out.shape) == tuple(example.output_shape)
    assert torch.isfinite(out).all(), "non-finite output"

    # backward reaches the parameters (or the inputs, for parameter-free components)
    out.float().sum().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    grads += [t.grad for t in example.inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    assert grads and any(g is not None for g in grads), "no gradient reached parameters or inputs"
    assert all(torch.isfinite(g).all() for g in grads if g is not None)

    # state_dict round trip through bytes into a differently initialised instance
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1234)
    clone = example.build()
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    module.eval(), clone.eval()
    with torch.no_grad():
        expected, got = _run(example, module, seed=7), _run(example, clone, seed=7)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("entry", _entries(["feature_extractor"]))
def test_feature_extractor_contract(entry):
    """Frozen measurement networks (no backward): features of the declared shape and a protocol naming everything a
    figure in them depends on."""
    cls = entry.target
    assert issubclass(cls, FeatureExtractor) and cls.metric and cls.label
    example = cls.example()
    module = example.build()
    with torch.no_grad():
        out = _run(example, module)
        assert tuple(out.shape) == tuple(example.output_shape) == (len(example.inputs[0]), module.feature_dim)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
    protocol = module.protocol()
    assert {"name", "weights", "weights_sha256", "resize", "features"} <= set(protocol)
    assert len(protocol["weights_sha256"]) == 64 and int(protocol["weights_sha256"], 16) >= 0
    assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("entry", _entries(["dataset"]))
def test_dataset_contract(entry):
    cls = entry.target
    assert issubclass(cls, DataModule)
    data = cls.example().build()
    for dataset in (data.train_dataset(), data.test_dataset()):
        assert len(dataset) > 0
        x, *_ = dataset[0]
        assert tuple(x.shape) == tuple(data.image_shape)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("entry", _entries(["preset"]))
def test_presets_build_on_meta(entry):
    """Every preset builds (on the meta device: no memory) into a registered model class."""
    with torch.device("meta"):
        model = vaezoo.create(entry.name)
    assert vaezoo.get_registry().find_class(type(model).__name__) is not None
    assert model.config["class_path"] == type(model).__name__
    assert sum(p.numel() for p in model.parameters()) > 0
