"""Single-image network training infrastructure: determinism, padding, AMP, progress, checkpoints
(device and threads come from :mod:`octascope.core.devices`).

Shared by the ``s2sred`` and ``dip`` denoisers. Imports torch at module level, so import this
module only inside ``denoise`` methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, Iterator
import pickle
import re

import numpy as np
import torch

from octascope.core.errors import ConfigError, InputError
from octascope.core.devices import cpu_threads, resolve_cpu_threads, select_device  # noqa: F401  (used as tr.*)


@contextlib.contextmanager
def deterministic(seed: int, enabled: bool = True) -> Iterator[None]:
    """Seed torch and (when ``enabled``) switch on deterministic algorithms, restoring the global
    settings afterwards. Used on the CPU; on CUDA several backward kernels (e.g. upsampling) have
    no deterministic version, so runs there are seeded but not bit-reproducible."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.manual_seed(seed)
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def pad_to_multiple(data: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad a 2-D array at the bottom/right up to a multiple of ``multiple`` (at least one).

    Returns the padded array and the original shape (crop ``[:h, :w]`` to undo).
    """
    h, w = data.shape
    ph = max(multiple, -(-h // multiple) * multiple) - h
    pw = max(multiple, -(-w // multiple) * multiple) - w
    return np.pad(data, ((0, ph), (0, pw)), mode="symmetric"), (h, w)


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 rotations/flips of the square (k in 0..7) of the last two axes."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


class Precision:
    """Automatic mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling); off on CPU."""

    def __init__(self, device: torch.device, enabled: bool):
        self.enabled = bool(enabled) and device.type == "cuda"
        self.dtype = torch.float32
        if self.enabled:
            self.dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def progress_bar(total: int, initial: int, enabled: bool, desc: str):
    """A tqdm bar (postfix shows the loss); a silent one when disabled."""
    # lazy: tqdm (~14 ms to import), only when a progress bar is shown
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


def fingerprint(settings: dict[str, Any], data: np.ndarray) -> str:
    """A hash of the training settings and the image, to tell whether a checkpoint belongs to this run."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
    return h.hexdigest()


def safe_load(path: str, who: str) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain values only.

    A checkpoint holds tensors, numbers, strings, lists and dicts (network and optimiser state,
    the ADMM/EMA tensors, the random-generator states as byte tensors), so the restricted
    unpickler reads it in full. Anything else — a pickle that names a Python callable, which
    the full unpickler would call — is refused before any of it runs.

    Raises
    ------
    InputError
        The file is not a checkpoint made of plain values (hostile or corrupt), in one line.
    """

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        inner = re.search(r"WeightsUnpickler error: ([^\n]+)", text)
        if found:
            reason = f"it names the Python callable {found.group(1)}"
        elif inner:
            reason = inner.group(1).strip()
        elif "Weights only load failed" in text:
            reason = "not readable as a torch checkpoint"
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            reason = lines[0] if lines else type(exc).__name__
        raise InputError(
            f"{who}: checkpoint {path} is not a plain-tensor checkpoint and was not loaded "
            f"({reason[:160]}); delete it or set a different checkpoint_path"
        ) from None


class Checkpointer:
    """Save the training state every ``every`` iterations and resume from a matching file.

    Parameters
    ----------
    path : str or None
        Checkpoint file; ``None`` disables checkpointing.
    every : int
        Save interval [iterations].
    key : str
        :func:`fingerprint` of the settings and the image; a file with another key is refused.
    who : str
        Plugin name for messages.
    """

    def __init__(self, path: str | None, every: int, key: str, who: str):
        self.path = path
        self.every = max(1, int(every))
        self.key = key
        self.who = who

    def load(self) -> dict[str, Any] | None:
        """The saved state when the file exists and matches, else ``None``."""
        if not self.path or not os.path.exists(self.path):
            return None
        state = safe_load(self.path, self.who)
        if not isinstance(state, dict) or state.get("key") != self.key:
            raise ConfigError(
                f"{self.who}: checkpoint {self.path} was made with other settings or another image; "
                "delete it or set a different checkpoint_path"
            )
        return state

    def due(self, iteration: int, last: int) -> bool:
        return bool(self.path) and (iteration % self.every == 0 or iteration == last)

    def save(self, state: dict[str, Any]) -> None:
        if not self.path:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        tmp = f"{self.path}.tmp"
        torch.save({**state, "key": self.key}, tmp)
        os.replace(tmp, self.path)  # atomic: an interrupted save never leaves a broken checkpoint


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Everything random the training loop draws from (masks, dropout, augmentation)."""
    state = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)


def checkpoint_state(st: Any, iteration: int, device: torch.device, **tensors: torch.Tensor) -> dict[str, Any]:
    """What a checkpoint of a training state ``st`` (``net``, ``opt``, ``losses``, ``gen``) holds after
    ``iteration``: the network's and the optimiser's state, the denoiser's own ``tensors`` (on the CPU),
    the losses and the random state."""
    return {"net": st.net.state_dict(), "opt": st.opt.state_dict(), **{k: v.cpu() for k, v in tensors.items()},
            "iteration": iteration, "losses": st.losses, "rng": rng_state(st.gen, device)}


def resume(st: Any, saved: dict[str, Any], device: torch.device) -> None:
    """Restore a training state ``st`` from its checkpoint ``saved`` (:func:`checkpoint_state`): the
    network's and the optimiser's state, the iterations done (``start``), the losses and the random
    state; the denoiser restores its own tensors."""
    st.net.load_state_dict(saved["net"])
    st.opt.load_state_dict(saved["opt"])
    st.start, st.losses = int(saved["iteration"]), list(saved["losses"])
    set_rng_state(saved["rng"], st.gen, device)
