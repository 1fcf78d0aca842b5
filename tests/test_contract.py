"""Every registered component passes the common contract at tiny size.

Parametrised over the registry itself: registering a component is enough to have it tested.
"""

from __future__ import annotations

import io

import pytest
import torch

import vaezoo
from vaezoo.interfaces import INTERFACES, Component, DataModule

_MODULE_KINDS = [k for k, cls in INTERFACES.items() if k != "dataset"]


def _entries(kinds):
    registry = vaezoo.get_registry()
    return [pytest.param(e, id=f"{e.kind}:{e.name}") for k in kinds for e in registry.entries(k)]


#: components whose backward pass is by design not the derivative of their output (a surrogate with stopped
#: gradients), with the reason; every other component's gradient must equal its output's finite difference
SURROGATE_GRADIENTS = {
    "ScorePrior": "the VAE's term reaches the latents only (network detached) and the prior's loss reads detached latents",
    "ScorePriorObjective": "the score prior's surrogate (see ScorePrior) inside the objective",
    "NVAEObjective": "KL balancing weights the groups' KL with coefficients that are not differentiated (NVAE's)",
}


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

    if entry.name not in SURROGATE_GRADIENTS:
        _assert_gradient_is_the_derivative(cls)

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


def _assert_gradient_is_the_derivative(cls) -> None:
    """The gradient backward gives, against the output's own central difference (float64): along a random direction
    d of the parameters (and float inputs), ``<grad, d>`` equals ``(f(theta + h d) - f(theta - h d)) / 2h`` for
    ``f = sum(output)``. Each evaluation starts from the same buffers (BatchNorm statistics, power-iteration vectors,
    taken after a first call has created any lazy ones) and the same seed, so ``f`` is one deterministic function.
    A detached or dropped term, a wrong custom backward or a parameter that never reaches the output while it should
    all break it."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        example = cls.example()
        module = example.build()
        inputs = [
            t for t in example.inputs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad
        ]
        leaves = [p for p in module.parameters() if p.requires_grad] + inputs
        if not leaves or any(t.dtype != torch.float64 for t in leaves):
            return  # a component that keeps its own dtype: checked by the float32 gradient test above only
        with torch.no_grad():
            _run(example, module, seed=11)  # creates lazy state (e.g. power-iteration vectors)
        buffers = {name: b.clone() for name, b in module.named_buffers()}

        def f() -> torch.Tensor:
            with torch.no_grad():
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
            return _run(example, module, seed=11).sum()

        for t in leaves:
            t.grad = None
        value = f()
        value.backward()
        generator = torch.Generator().manual_seed(3)
        direction = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in leaves]
        analytic = sum(float((t.grad * d).sum()) for t, d in zip(leaves, direction, strict=True) if t.grad is not None)
        # an output rounded to float32 on purpose (a logsumexp kept in fp32) takes a larger step and tolerance
        exact = value.dtype == torch.float64
        h, tolerance = (1e-6, 1e-4) if exact else (1e-3, 1e-2)
        values = []
        with torch.no_grad():
            for sign in (1.0, -1.0):
                for t, d in zip(leaves, direction, strict=True):
                    t.add_(sign * h * d)
                values.append(float(f()))
                for t, d in zip(leaves, direction, strict=True):
                    t.sub_(sign * h * d)
    finally:
        torch.set_default_dtype(default)
    numeric = (values[0] - values[1]) / (2 * h)
    assert analytic == pytest.approx(numeric, rel=tolerance, abs=1e-6), (analytic, numeric)


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
