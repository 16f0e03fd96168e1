"""A stop request whose exception was swallowed (a signal landing in a finalizer) still stops the run at
the next stage boundary."""

from __future__ import annotations

import pytest

import octascope
from octascope.core import interrupts
from octascope.core.errors import Interrupted


def test_a_recorded_stop_is_raised_at_the_next_stage(small_synthetic):
    image, _ = small_synthetic
    interrupts.request_stop(15)
    try:
        with pytest.raises(Interrupted) as info:
            octascope.analyze(image, progress=None)
        assert info.value.signame == "SIGTERM"
    finally:
        interrupts.clear()
    assert len(octascope.analyze(image, progress=None).columns) > 0  # cleared: the next run goes through
