"""Shared torch device/thread settings."""

import pytest
import torch

from octascope.core.errors import PluginError
from octascope.core.devices import cpu_threads, select_device


def test_cpu_threads_set_and_restored():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before


def test_unknown_device_is_an_error():
    with pytest.raises(PluginError, match="use auto, cpu, cuda"):
        select_device("tpu", "locator 'gaussian'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_cuda_absent_falls_back_with_a_warning():
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        assert select_device("cuda", "locator 'gaussian'").type == "cpu"
    assert select_device("auto", "x").type == "cpu"
