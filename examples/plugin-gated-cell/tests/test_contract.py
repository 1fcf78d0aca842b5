"""The plugin passes vaezoo's contract checks: every component and preset it registers."""

import pytest

from vaezoo.testing import check_entry, check_preset, plugin_entries


@pytest.mark.parametrize("entry", plugin_entries("gated"), ids=lambda e: f"{e.kind}:{e.name}")
def test_contract(entry):
    check_entry(entry)


def test_the_small_preset_trains():
    """One forward and backward pass of the tiny preset: the parts work together, not only each on its own."""
    check_preset("gated-test", run=True)
