"""Every registered component passes the common contract at tiny size, through the checks vaezoo ships to plugins
(:mod:`vaezoo.testing`). Parametrised over the registry itself: registering a component is enough to have it tested.
And the checks themselves catch what they promise to catch, and the registry refuses what breaks a slot's contract.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vaezoo import hookimpl
from vaezoo.errors import RegistryError
from vaezoo.interfaces import (
    INTERFACES,
    Cell,
    Combiner,
    ConditionalPrior,
    Example,
    GroupPosterior,
    Prior,
    UnconditionalPrior,
    VectorPosterior,
)
from vaezoo.plugins import get_registry, plugin
from vaezoo.registry import Registry
from vaezoo.testing import (
    ContractError,
    check_component,
    check_entry,
    check_preset,
    check_registration,
    plugin_entries,
)
from vaezoo.testing.doubles import ConcatCombiner, ConvCell, ConvNormalPrior, ZeroNormalPrior


def _params(kinds):
    return [pytest.param(e, id=f"{e.kind}:{e.name}") for e in plugin_entries(kinds=kinds)]


@pytest.mark.parametrize(
    "entry", _params([k for k in INTERFACES if k not in ("dataset", "feature_extractor", "logger")])
)
def test_component_contract(entry):
    check_entry(entry)


@pytest.mark.parametrize("entry", _params(["logger"]))
def test_logger_contract(entry):
    check_entry(entry)


@pytest.mark.parametrize("entry", _params(["feature_extractor"]))
def test_feature_extractor_contract(entry):
    check_entry(entry)


@pytest.mark.parametrize("entry", _params(["dataset"]))
def test_dataset_contract(entry):
    check_entry(entry)


@pytest.mark.parametrize("entry", _params(["preset"]))
def test_presets_build_on_meta(entry):
    check_entry(entry)


@pytest.mark.parametrize("double", [ConvCell, ConcatCombiner, ConvNormalPrior, ZeroNormalPrior])
def test_the_shipped_doubles_pass_the_contract(double):
    check_component(double)


# -- the checks catch what they promise ------------------------------------------------------------
class _Scale(Cell):
    """y = a * x + b: the reference component the broken variants below start from."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.a, self.b = nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.a * x + self.b

    @classmethod
    def example(cls):
        return Example(build=lambda: cls(2, 2), inputs=(torch.randn(2, 2, 3, 3),), output_shape=(2, 2, 3, 3))


class _DeadParameter(_Scale):
    def forward(self, x):
        return self.a * x  # b never reaches the output


class _WrongShape(_Scale):
    @classmethod
    def example(cls):
        return Example(build=lambda: cls(2, 2), inputs=(torch.randn(2, 2, 3, 3),), output_shape=(2, 2, 4, 4))


class _StateOutsideStateDict(_Scale):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.offset = float(torch.rand(()))  # neither a parameter nor a buffer: lost by save and load

    def forward(self, x):
        return self.a * x + self.b + self.offset


class _WrongBackward(_Scale):
    def forward(self, x):  # the value a x + b, but twice b's gradient
        return self.a * x + 2 * self.b - self.b.detach()


class _NonFinite(_Scale):
    def forward(self, x):
        return (self.a * x + self.b) / 0.0


def test_contract_checks_pass_a_sound_component_and_name_each_fault():
    check_component(_Scale, "cell")
    for broken, message in [
        (_DeadParameter, r"^_DeadParameter: no gradient reaches b$"),
        (_WrongShape, r"output has shape \(2, 2, 3, 3\), the example says \(2, 2, 4, 4\)"),
        (_StateOutsideStateDict, r"state_dict does not carry its state"),
        (_NonFinite, r"output is not finite"),
        (_WrongBackward, r"^_WrongBackward: its gradient is not the derivative of its output"),
    ]:
        with pytest.raises(ContractError, match=message):
            check_component(broken, "cell")


def test_contract_entries_of_an_unknown_plugin_are_an_error_not_an_empty_list():
    with pytest.raises(ContractError, match=r"plugin 'vaezoo_nonexistent' registered nothing"):
        plugin_entries("vaezoo_nonexistent")
    names = {e.name for e in plugin_entries("core")}
    assert {"HierarchicalVAE", "EncoderCombiner", "NormalPrior", "ELBO"} <= names


# -- a slot's contract is refused at registration ------------------------------------------------
class _CombinerWithStride(Combiner):
    """The combiner signature of an older release: ``aux_channels`` would land in ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, aux_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels, aux_channels)

    def forward(self, x, aux):
        return x

    @classmethod
    def example(cls):
        return Example(build=lambda: cls(2, 2, 1, 3), inputs=(torch.randn(1, 2, 2, 2), torch.randn(1, 3, 2, 2)))


class _PlainPrior(Prior):
    """Neither conditional nor unconditional: which slot it fills is unknown."""

    def forward(self, state, latent_shape, temperature=1.0):
        return None

    @classmethod
    def example(cls):
        return Example(build=cls)


class _ConditionalWithoutChannels(ConditionalPrior):
    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()

    def forward(self, state, latent_shape, temperature=1.0):
        return None

    @classmethod
    def example(cls):
        return Example(build=cls)


class _UntypedCell(Cell):
    def __init__(self, in_channels, out_channels, stride: int = 1) -> None:  # noqa: ANN001 - the point of the test
        super().__init__()

    def forward(self, x):
        return x

    @classmethod
    def example(cls):
        return Example(build=lambda: cls(1, 1))


@pytest.mark.parametrize(
    ("kind", "cls", "message"),
    [
        (
            "cell",
            _UntypedCell,
            r"^cell '_UntypedCell' \(plugin 'p'\): _UntypedCell: its constructor's arguments in_channels, out_channels "
            r"have no type hint \(recipes need one for every argument without a default, e\.g\. in_channels: int\)$",
        ),
        (
            "combiner",
            _CombinerWithStride,
            r"^combiner '_CombinerWithStride' \(plugin 'p'\): _CombinerWithStride: its constructor must take the "
            r"slot's arguments \(in_channels, out_channels, aux_channels\) first, in this order \(its first "
            r"positional arguments: in_channels, out_channels, stride, aux_channels\)$",
        ),
        ("prior", _PlainPrior, r"_PlainPrior: a prior subclasses UnconditionalPrior .* or ConditionalPrior"),
        (
            "prior",
            _ConditionalWithoutChannels,
            r"must take the slot's arguments \(in_channels, latent_channels\) first.*\(its first positional "
            r"arguments: scale\)$",
        ),
        ("combiner", _Scale, r"_Scale is not a subclass of vaezoo.interfaces.Combiner$"),
    ],
)
def test_registration_refuses_a_class_that_breaks_its_slot(kind, cls, message):
    with pytest.raises(RegistryError, match=message):
        Registry(INTERFACES).register(kind, cls, plugin="p")
    with pytest.raises(ContractError, match=message.replace("plugin 'p'", "plugin '\\?'")):
        check_registration(cls, kind)


def test_each_built_in_prior_and_posterior_fills_one_kind_of_slot():
    """The hierarchical assembler's ``prior`` and ``posterior`` slots build per group, its ``top_prior`` takes one
    instance, as do ConvVAE's prior and posterior."""
    priors = {e.name: e.target for e in plugin_entries(kinds=["prior"])}
    conditional = sorted(n for n, c in priors.items() if issubclass(c, ConditionalPrior))
    unconditional = sorted(n for n, c in priors.items() if issubclass(c, UnconditionalPrior))
    assert conditional == ["BottleneckNormalPrior", "NormalPrior"]
    assert unconditional == ["FixedNormalPrior", "StandardNormalPrior"]
    posteriors = {e.name: e.target for e in plugin_entries(kinds=["posterior"])}
    per_group = sorted(n for n, c in posteriors.items() if issubclass(c, GroupPosterior))
    assert per_group == [
        "BottleneckNormalPosterior",
        "NormalPosterior",
        "PrecisionWeightedPosterior",
        "ResidualNormalPosterior",
    ]
    assert [n for n, c in posteriors.items() if issubclass(c, VectorPosterior)] == ["GaussianPosterior"]


class _NaNPrior(UnconditionalPrior):
    """Fits ConvVAE's prior slot and builds, but gives a NaN mean: only running the model shows it."""

    def forward(self, state, latent_shape, temperature: float = 1.0):
        from vaezoo.distributions import DiagonalNormal

        zeros = state.new_zeros(tuple(latent_shape))
        return DiagonalNormal(zeros + float("nan"), zeros, temperature)

    @classmethod
    def example(cls):
        return Example(build=cls)


class _NaNPlugin:
    @hookimpl
    def register_components(self, register):
        register("prior", _NaNPrior)

    @hookimpl
    def register_presets(self, register):
        def spec(**overrides):
            base = get_registry().get("preset", "test-vae").target(**overrides)
            return {**base, "init_args": {**base["init_args"], "prior": {"class_path": "_NaNPrior"}}}

        register("contract-nan-test", spec)


def test_running_a_preset_catches_parts_that_build_but_do_not_work_together():
    check_preset("test-vae", run=True)  # a working preset passes
    with plugin(_NaNPlugin(), name="contract-nan"):
        check_preset("contract-nan-test")  # it builds
        with pytest.raises(ContractError) as raised:
            check_preset("contract-nan-test", run=True)
    assert (
        str(raised.value)
        == "preset 'contract-nan-test': the negative ELBO per example is [nan, nan], not 2 finite values"
    )
