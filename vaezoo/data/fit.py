"""Whether a data module gives the images a model takes, and if not, which data setting would fix it."""

from __future__ import annotations

import inspect

from ..errors import VaezooError


def check_data_fits(model, data, option: str = "data") -> None:
    """One line naming the mismatch between ``model.image_shape`` and ``data.image_shape`` and the data module's
    settings that would close it (read from its constructor: ``pad``, ``image_size``, ``mode``), before any batch
    reaches the model (where it would be a tensor-size traceback)."""
    want, got = tuple(int(v) for v in model.image_shape), tuple(int(v) for v in data.image_shape)
    if want == got:
        return
    name = type(data).__name__
    try:
        settings = inspect.signature(type(data).__init__).parameters
    except (TypeError, ValueError):
        settings = {}
    fixes = []
    (c, h, w), (dc, dh, dw) = want, got
    if (h, w) != (dh, dw):
        if "pad" in settings and h - dh == w - dw and h > dh and (h - dh) % 2 == 0:
            fixes.append(f"pad: {(h - dh) // 2} (pads {dh}x{dw} to {h}x{w})")
        elif "image_size" in settings and h == w:
            fixes.append(f"image_size: {h}")
    if c != dc and "mode" in settings:
        modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
        if c in modes:
            fixes.append(f"mode: {modes[c]}")
    hint = f"; set {' and '.join(fixes)} in {option}'s init_args" if fixes else ""
    raise VaezooError(f"{option}: the model takes {c}x{h}x{w} images, {name} gives {dc}x{dh}x{dw}{hint}")
