"""The data sets of vaezoo as registered data modules."""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.data import BundledMNIST


@hookimpl
def register_components(register):
    register("dataset", BundledMNIST)
