"""The speed levers of issue 15: fused and recomputing BatchNorm-Swish, cell compilation's recompile limit, and the
CPU feature detection behind the bf16 warning. Default behaviour (levers off) is covered by the fidelity tests."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

import vaezoo
from vaezoo import hardware
from vaezoo.errors import VaezooError
from vaezoo.nn import BatchNormSwish
from vaezoo.nn import norm as norm_module


def _bn_swish(channels: int) -> BatchNormSwish:
    layer = BatchNormSwish(channels)
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 1.5)
        layer.bn.bias.uniform_(-0.5, 0.5)
    return layer


@pytest.mark.parametrize("mode", ["fused", "recompute"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bn_swish_modes_match_native(mode, channels_last):
    torch.manual_seed(0)
    reference = _bn_swish(6)
    x0 = torch.randn(3, 6, 5, 4) * 2 + 0.3
    if channels_last:
        x0 = x0.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(3, 6, 5, 4)
    results = {}
    for name in ("native", mode):
        layer = copy.deepcopy(reference)
        layer.mode = name
        x = x0.clone().requires_grad_()
        out = layer(x)
        out.backward(grad)
        bn = layer.bn
        results[name] = [out, x.grad, bn.weight.grad, bn.bias.grad, bn.running_mean, bn.running_var]
        assert int(bn.num_batches_tracked) == 1
    for got, want in zip(results[mode], results["native"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_recompute_keeps_only_the_input_for_backward():
    layer = _bn_swish(4)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    saved = {}
    for mode in ("fused", "recompute"):
        layer.mode = mode
        big: list[int] = []

        def pack(t, big=big):
            big.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x)
        saved[mode] = sum(n for n in big if n == x.numel())
    assert saved["fused"] == 2 * x.numel() and saved["recompute"] == x.numel()


@pytest.mark.parametrize(
    ("kernel_size", "stride", "channels_last"), [(3, 1, False), (1, 1, True), (3, 1, True), (3, -1, False)]
)
def test_input_only_bn_swish_conv_keeps_only_the_bn_input(kernel_size, stride, channels_last):
    """The paper's memory mode: the conv fed by an ``input_only`` BN-Swish does not keep its input (the BN-Swish
    output dies with the forward pass), yet the backward pass gives the gradients of ``native``: the conv's input is
    rebuilt from the BN input when needed (1x1 channels_last convs run as a GEMM that saves a view of it; stride -1
    up-samples in between)."""
    import gc
    import weakref

    from vaezoo.nn import BNSwishConv, recompute_bn_swish_outputs

    torch.manual_seed(0)
    reference = BNSwishConv(6, 5, stride=stride, kernel_size=kernel_size)
    with torch.no_grad():
        reference.bn_act.bn.weight.uniform_(0.5, 1.5)
        reference.bn_act.bn.bias.uniform_(-0.5, 0.5)
    x0 = torch.randn(3, 6, 5, 4) * 2 + 0.3
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    results, alive = {}, {}
    for mode in ("native", "input_only"):
        block = copy.deepcopy(reference)
        block.bn_act.mode = mode
        consumed = []  # the tensor the conv consumes (the BN-Swish output, up-sampled at stride -1)
        block.conv.register_forward_pre_hook(lambda _m, args, consumed=consumed: consumed.append(weakref.ref(args[0])))
        x = x0.clone().requires_grad_()
        # the model enters the recomputing block in the input_only mode only
        with recompute_bn_swish_outputs() if mode == "input_only" else contextlib.nullcontext():
            out = block(x)
        gc.collect()
        alive[mode] = consumed[0]() is not None
        out.backward(torch.cos(out.detach()))
        results[mode] = [out, x.grad, *(p.grad for p in block.parameters()), block.bn_act.bn.running_var]
    assert alive == {"native": True, "input_only": False}
    for got, want in zip(results["input_only"], results["native"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
def test_input_only_model_gradients_match_and_the_outputs_are_rebuilt(channels_last, monkeypatch):
    """A whole NVAE (encoder BN-Swish-conv cells, decoder inverted residuals with depthwise convs) in ``input_only``
    gives the gradients of ``fused`` to float rounding, and its backward pass did rebuild BN-Swish outputs (one per
    BN-Swish that feeds a conv); in eval mode or without gradients nothing is packed."""
    rebuilt = []
    original = norm_module._Recipe.rebuild
    monkeypatch.setattr(norm_module._Recipe, "rebuild", lambda self: rebuilt.append(1) or original(self))
    torch.manual_seed(0)
    reference = vaezoo.create("nvae-cifar10", encoder_channels=4, decoder_channels=4, groups_per_scale=2)
    x = torch.rand(2, 3, 32, 32)
    if channels_last:
        reference = reference.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    grads = {}
    for mode in ("fused", "input_only"):
        model = copy.deepcopy(reference).train()
        model.set_bn_swish(mode)
        torch.manual_seed(1)
        out = model(x)
        (out.recon.sum() + out.kl.sum()).backward()
        grads[mode] = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        if mode == "fused":
            assert not rebuilt
    feeding = sum(1 for m in reference.modules() if isinstance(m, BatchNormSwish))
    assert feeding <= len(rebuilt) <= 2 * feeding  # a conv may unpack its input once per gradient it computes
    assert grads["fused"].keys() == grads["input_only"].keys()
    for name, want in grads["fused"].items():
        torch.testing.assert_close(grads["input_only"][name], want, rtol=1e-4, atol=1e-6, msg=name)
    rebuilt.clear()
    with torch.no_grad():
        model(x)
    assert not rebuilt


def test_bn_swish_falls_back_to_native_in_eval_and_without_grad():
    layer = _bn_swish(4)
    layer.mode = "recompute"
    x = torch.randn(2, 4, 3, 3)
    calls = []
    original = norm_module.BatchNormSwishFunction.apply
    norm_module.BatchNormSwishFunction.apply = lambda *args: calls.append(1) or original(*args)
    try:
        with torch.no_grad():
            layer(x)
        layer.eval()
        layer(x.requires_grad_())
        assert not calls
        layer.train()  # the positive control: training with gradients takes the recomputing function, once
        layer(x)
    finally:
        norm_module.BatchNormSwishFunction.apply = original
    assert calls == [1]


def test_bn_swish_lever_through_the_trainer():
    import vaezoo
    from vaezoo.training.speed import apply_speed_switches

    model = vaezoo.create("nvae-cifar10", encoder_channels=4, decoder_channels=4, groups_per_scale=2)
    apply_speed_switches(model, torch.device("cpu"), bn_swish="recompute", keep_freed_memory=False)
    modes = {m.mode for m in model.modules() if isinstance(m, BatchNormSwish)}
    assert modes == {"recompute"}
    with pytest.raises(ValueError, match="bn_swish must be one of"):
        model.set_bn_swish("fast")


def test_bn_swish_lever_names_the_recipe_key_for_a_model_without_it():
    from vaezoo.interfaces import GenerativeModel
    from vaezoo.training.speed import apply_speed_switches

    class NoBN(GenerativeModel):
        def forward(self, x, noise=None):  # pragma: no cover - never called
            raise NotImplementedError

    with pytest.raises(VaezooError, match="trainer.speed.bn_swish"):
        apply_speed_switches(NoBN.__new__(NoBN), torch.device("cpu"), bn_swish="fused", keep_freed_memory=False)


def test_compile_cells_raises_the_recompile_limit_to_cover_every_cell(monkeypatch):
    import torch._dynamo.config as dynamo_config

    import vaezoo

    dynamo_config.recompile_limit = 8  # restored after the test by conftest's _restore_global_state
    model = vaezoo.create("nvae-cifar10", encoder_channels=4, decoder_channels=4, groups_per_scale=2)
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: compiled.append(self))
    count = model.compile_cells()
    assert count == len(compiled) > 8
    assert dynamo_config.recompile_limit > 8


def test_cpu_info_reads_flags(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 avx2 fma avx512f\n")
    read = hardware._cpuinfo.__wrapped__  # uncached, so that each call reads the file as it is now
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: read(str(cpuinfo)))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    info = hardware.cpu_info()
    assert info["cpu_model"] == "Test CPU" and info["vector_extensions"] == ["avx2", "fma", "avx512f"]
    assert info["native_bf16"] is False and hardware.default_cpu_precision() == "fp32"
    warning = hardware.bf16_warning("bf16", torch.device("cpu"))
    assert warning is not None and "\n" not in warning and "emulated" in warning
    assert hardware.bf16_warning("fp32", torch.device("cpu")) is None
    assert "AVX2 FMA AVX512F" in hardware.machine_line(info)
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert hardware.native_bf16() is True and hardware.bf16_warning("bf16", torch.device("cpu")) is None
    assert hardware.default_cpu_precision() == "bf16"


def test_cpu_info_without_proc(monkeypatch, tmp_path):
    read = hardware._cpuinfo.__wrapped__
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: read(str(tmp_path / "missing")))
    assert hardware.native_bf16() is None and hardware.bf16_warning("bf16", torch.device("cpu")) is None


# -- convolutions with a short reduction run as im2col + GEMM on CPUs ------------------------------------------------
@pytest.mark.parametrize("channels_last_weight", [False, True])  # a channels_last model meeting an NCHW input
@pytest.mark.parametrize(
    ("in_channels", "out_channels", "kernel_size", "stride", "bias"),
    [(3, 5, 3, 1, True), (6, 36, 1, 1, True), (12, 20, 3, 2, False), (4, 4, 5, 1, True)],
)
def test_small_conv_gemm_path_matches_onednn(
    in_channels, out_channels, kernel_size, stride, bias, channels_last_weight, monkeypatch
):
    from vaezoo.nn import WeightNormConv2d, kernels

    torch.manual_seed(0)
    conv = WeightNormConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias)
    if channels_last_weight:
        conv.to(memory_format=torch.channels_last)
    x0 = torch.randn(3, in_channels, 9, 9)
    results = {}
    for limit in (kernels.SMALL_CONV_MAX_REDUCTION, 0):  # the GEMM path, then oneDNN's (the path turned off)
        monkeypatch.setattr(kernels, "SMALL_CONV_MAX_REDUCTION", limit)
        layer = copy.deepcopy(conv)
        x = x0.clone().requires_grad_()
        before = kernels.small_conv_calls["gemm"]
        out = layer(x)
        out.backward(torch.cos(out.detach()))
        taken = kernels.small_conv_calls["gemm"] - before
        results[limit] = [out, x.grad, *(p.grad for p in layer.parameters())]
        # a channels_last model keeps its layout: the NCHW path declines its layers
        assert taken == (1 if limit and not channels_last_weight else 0), (limit, taken)
    for got, want in zip(*results.values(), strict=True):  # float32 sums of a few hundred terms, in another order
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_a_channels_last_model_keeps_its_layout_from_a_one_channel_input():
    """The stem of a grey-scale channels_last model: its output is channels_last, so nothing downstream mixes layouts
    (an elementwise op between NCHW and channels_last tensors is several times slower on CPUs)."""
    from vaezoo.nn import WeightNormConv2d

    stem = WeightNormConv2d(1, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 16, 16).contiguous(memory_format=torch.channels_last)  # as the trainer makes it: row-major
    out = stem(x)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    want = torch.nn.functional.conv2d(x.contiguous(), stem.effective_weight().contiguous(), stem.bias, padding=1)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_small_conv_gemm_path_only_where_it_is_faster():
    from vaezoo.nn import kernels

    def applies(x, weight, groups=1):
        return kernels.small_conv_applies(x, weight, groups, (1, 1), "zeros")

    small = torch.randn(2, 6, 8, 8)
    assert applies(small, torch.randn(6, 6, 3, 3))  # a reduction of 54
    assert not applies(torch.randn(2, 48, 8, 8), torch.randn(48, 48, 3, 3))  # 432: oneDNN is ahead
    assert not applies(small, torch.randn(6, 1, 3, 3), groups=6)  # depthwise: oneDNN's kernel is the fast one
    assert not applies(small.contiguous(memory_format=torch.channels_last), torch.randn(6, 6, 3, 3))
    # the layout of a channels_last model shows even where is_contiguous cannot tell: a one-channel input (the stem of
    # a grey-scale model) and a weight with one input channel
    one_channel = torch.randn(2, 1, 8, 8)
    assert applies(one_channel, torch.randn(6, 1, 3, 3))
    # (``.contiguous(memory_format=...)`` keeps such a tensor as it is; ``.to(memory_format=...)``, as in
    # ``model.to(memory_format=torch.channels_last)``, restrides it)
    assert not applies(one_channel.to(memory_format=torch.channels_last), torch.randn(6, 1, 3, 3))
    assert not applies(one_channel, torch.randn(6, 1, 3, 3).to(memory_format=torch.channels_last))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not applies(small, torch.randn(6, 6, 3, 3))  # autocast decides the dtype of the conv


def test_compiled_depthwise_kernel_specialises_per_shape_beyond_dynamos_default_limit(monkeypatch):
    """The depthwise weight gradient is compiled per input shape (dynamic=False): more shapes than dynamo's default
    recompile limit (8) must all still run compiled, equal to oneDNN's kernel."""
    import torch._dynamo.config as dynamo_config
    from nvae.conftest import compiled_kernel_expected

    from vaezoo.nn import kernels

    if not compiled_kernel_expected():
        pytest.skip("no C++ compiler on this machine: the compiled kernel cannot run (tests/conftest says why)")
    # restored after the test by conftest's _restore_global_state (monkeypatch would delete these config entries)
    dynamo_config.recompile_limit = 8
    dynamo_config.fail_on_recompile_limit_hit = True  # not dynamo's silent eager fallback
    torch.manual_seed(0)
    for size in range(3, 13):  # ten shapes
        x, grad = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
        before = dict(kernels.kernel_calls)
        got = kernels.depthwise_weight_grad(grad, x, 3, 1)
        assert (
            kernels.kernel_calls["compiled"] == before["compiled"] + 1
            and kernels.kernel_calls["native"] == before["native"]
        )
        weight = torch.empty(3, 1, 3, 3)
        want = torch.ops.aten.convolution_backward(
            grad, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 3, [False, True, False]
        )[1]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert dynamo_config.recompile_limit == 8  # raised for the kernel's own calls only


def test_weight_normalize_is_the_paper_formula():
    from vaezoo.nn import weight_normalize

    torch.manual_seed(0)
    weight, log_norm = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(5, 1, 1, 1, dtype=torch.float64)
    norm = torch.sqrt((weight * weight).sum(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(weight_normalize(log_norm, weight), torch.exp(log_norm) * weight / (norm + 1e-5))
    stacked = torch.stack([weight, 2 * weight])  # stacked weights (the spectral regulariser's batches) too
    torch.testing.assert_close(
        weight_normalize(torch.stack([log_norm] * 2), stacked)[1], weight_normalize(log_norm, 2 * weight)
    )


def test_small_conv_gemm_path_on_a_one_channel_channels_last_input(monkeypatch):
    """The stem of a channels_last model sees (N, 1, H, W) images in channels_last strides, which ``is_contiguous``
    accepts: the GEMM path must give oneDNN's gradients there too."""
    from vaezoo.nn import WeightNormConv2d, kernels

    torch.manual_seed(0)
    conv = WeightNormConv2d(1, 8, 3, padding=1).to(memory_format=torch.channels_last)
    x0 = torch.rand(4, 1, 10, 10).contiguous(memory_format=torch.channels_last)
    grads = {}
    for limit in (kernels.SMALL_CONV_MAX_REDUCTION, 0):
        monkeypatch.setattr(kernels, "SMALL_CONV_MAX_REDUCTION", limit)
        layer = copy.deepcopy(conv)
        out = layer(x0)
        out.backward(torch.sin(out.detach()))
        grads[limit] = [p.grad for p in layer.parameters()]
    for got, want in zip(*grads.values(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))


def test_precision_auto_chooses_bf16_only_on_amx_for_wide_convolutions(tmp_path, monkeypatch):
    """``precision: auto`` on a CPU: fp32 without AMX tiles; with them, bf16 when the median convolution has at least
    AUTO_BF16_MIN_CHANNELS output channels, fp32 below (however wide one layer is); the trainer says which, once, and
    autocasts accordingly."""
    from vaezoo.training import Trainer

    cpuinfo = tmp_path / "cpuinfo"
    read = hardware._cpuinfo.__wrapped__
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: read(str(cpuinfo)))
    monkeypatch.setattr(hardware.platform, "machine", lambda: "x86_64")
    cpu = torch.device("cpu")
    conv = torch.nn.Conv2d
    narrow = torch.nn.Sequential(conv(1, 63, 3), conv(63, 63, 3), conv(63, 100, 1))  # a wide head: median 63
    wide = torch.nn.Sequential(conv(1, 64, 3), conv(64, 64, 3), conv(64, 3, 1))  # a narrow head: median 64
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: avx2 avx512f avx512_bf16\n")  # bf16 dot products, no AMX
    assert hardware.auto_precision(cpu, wide)[0] == "fp32"
    cpuinfo.write_text("model name\t: Test CPU\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert hardware.auto_precision(cpu, narrow) == ("fp32", "the median convolution has 63 channels (bf16 pays from "
                                                    "64 on AMX; below, its conversions cost as much as it saves)")  # fmt: skip
    assert hardware.auto_precision(cpu, wide) == (
        "bf16",
        "AMX tiles (amx_bf16) and a median convolution of 64 channels",
    )
    assert hardware.auto_precision(cpu, torch.nn.Linear(3, 300))[0] == "fp32"  # no convolution at all
    # through the trainer: resolved at prepare, said in one line, and the step autocasts in what was chosen
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=64, hidden_units=8)
    trainer = Trainer(precision="auto", device="cpu")
    trainer.prepare(model, vaezoo.build({"class_path": "ELBO"}, kind="objective"), 4, 8)
    assert trainer.precision == "bf16" and trainer.precision_note.startswith("trainer.precision auto: bf16 (AMX")
    with trainer._autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")
