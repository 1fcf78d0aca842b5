"""The plugin passes vaezoo's contract checks: every component and preset it registers."""

import pytest

from vaezoo.testing import check_entry, plugin_entries


@pytest.mark.parametrize("entry", plugin_entries("gated"), ids=lambda e: f"{e.kind}:{e.name}")
def test_contract(entry):
    check_entry(entry)
