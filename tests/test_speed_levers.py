"""The speed levers of issue 15: fused and recomputing BatchNorm-Swish, cell compilation's recompile limit, and the
CPU feature detection behind the bf16 warning. Default behaviour (levers off) is covered by the fidelity tests."""

from __future__ import annotations

import copy

import pytest
import torch

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
    finally:
        norm_module.BatchNormSwishFunction.apply = original
    assert not calls


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

    with pytest.raises(VaezooError, match="trainer.bn_swish"):
        apply_speed_switches(NoBN.__new__(NoBN), torch.device("cpu"), bn_swish="fused", keep_freed_memory=False)


def test_compile_cells_raises_the_recompile_limit_to_cover_every_cell(monkeypatch):
    import torch._dynamo.config as dynamo_config

    import vaezoo

    monkeypatch.setattr(dynamo_config, "recompile_limit", 8)
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
