"""Checkpoints are loaded as plain tensors/values: a file that would run code when unpickled is refused unrun."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from octascope.core.errors import InputError  # noqa: E402
from octascope.core.model import Image  # noqa: E402


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: creates the marker file (a stand-in for any command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_checkpoint(path, marker):
    # looks like a checkpoint (a dict with the usual keys), but one value is the payload
    torch.save({"key": "whatever", "iteration": 1, "payload": _Payload(marker)}, path)


def test_the_payload_is_live_under_a_full_unpickler(tmp_path):
    """Control: the crafted file really runs code when loaded the old way (so the next tests can fail)."""
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _hostile_checkpoint(path, marker)
    assert not marker.exists()
    obj = torch.load(path, weights_only=False)
    obj["payload"].close()
    assert marker.exists()


def test_checkpointer_refuses_a_pickle_payload_without_running_it(tmp_path):
    from octascope_plugins.denoise._training import Checkpointer

    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _hostile_checkpoint(path, marker)
    with pytest.raises(InputError) as info:
        Checkpointer(str(path), 1, "key", "s2sred").load()
    message = str(info.value)
    assert "\n" not in message
    assert "s2sred" in message and str(path) in message and "checkpoint_path" in message
    assert not marker.exists(), "the payload ran"


@pytest.mark.parametrize("plugin", ["s2sred", "dip"])
def test_denoisers_refuse_a_crafted_checkpoint_path(plugin, tmp_path):
    from octascope.core.registry import get_registry

    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    _hostile_checkpoint(path, marker)
    image = Image(data=np.random.default_rng(0).normal(size=(32, 32)).astype(np.float32), pixel_size_A=0.2)
    den = get_registry(load_entrypoints=False).create("denoiser", plugin, n_iterations=1, device="cpu", progress=False,
                                                      checkpoint_path=str(path))
    with pytest.raises(InputError, match="not loaded"):
        den.denoise(image)
    assert not marker.exists(), "the payload ran"


def test_a_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    from octascope_plugins.denoise._training import Checkpointer

    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError) as info:
        Checkpointer(str(path), 1, "key", "dip").load()
    assert "\n" not in str(info.value)


def test_a_real_checkpoint_round_trips_under_weights_only(tmp_path):
    """What the trainers save (net, Adam state, tensors, RNG states, losses) loads with weights_only=True."""
    from octascope_plugins.denoise._training import Checkpointer, rng_state

    net = torch.nn.Conv2d(1, 2, 3)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.ones(1, 1, 5, 5)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(3)
    ck = Checkpointer(str(tmp_path / "ok.pt"), 1, "abc", "s2sred")
    ck.save({"net": net.state_dict(), "opt": opt.state_dict(), "x": torch.zeros(2, 2), "iteration": 5,
             "losses": [0.5, 0.25], "rng": rng_state(gen, torch.device("cpu"))})
    state = ck.load()
    assert state["iteration"] == 5 and state["losses"] == [0.5, 0.25]
    assert torch.equal(state["rng"]["generator"], gen.get_state())
    opt.load_state_dict(state["opt"])
