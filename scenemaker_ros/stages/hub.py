"""Loading and running the heavy pretrained backends (Hugging Face checkpoints) on a GPU.

Every heavy backend's config carries the same plain fields next to its model id(s):

- ``device``: "auto" (CUDA when present, else the CPU with a warning that it is slow), "cpu",
  "cuda", "cuda:1", ...
- ``dtype``: "auto" (bfloat16 on a GPU that supports it, else float16; float32 on the CPU),
  "float32", "float16" or "bfloat16".
- ``offline``: read only the local Hugging Face cache or a local folder (``local_files_only``).
- ``cpu_offload``: weights live in CPU memory and move to the GPU module by module as they run
  (``accelerate``; diffusers pipelines use their own ``enable_model_cpu_offload``).
- ``free_after_use``: weights wait in CPU memory and visit the GPU only during a call, after which
  the CUDA cache is emptied, so stages run one after another on an 8-16 GB GPU.

``from_pretrained`` turns a missing or unreadable checkpoint into one SceneMakerError line naming
the model, the backend and how to get the weights; ``out_of_memory_hint`` (inside ``gpu_call``)
does the same for a CUDA out-of-memory error. ``Runtime`` bundles them for one backend's config
section. ``transformers`` and ``diffusers`` are imported (``require``) by the backends that need
them, when built.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch
from torch import nn

from scenemaker_ros.errors import SceneMakerError

log = logging.getLogger(__name__)

Model = TypeVar("Model")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")  # "org/name" or "name"


def resolve_device(name: str, key: str = "device", what: str = "this backend") -> torch.device:
    """The torch device a config's ``device`` string names; "auto" picks CUDA when present.

    SceneMakerError naming ``key`` for an invalid name or a CUDA device on a machine without one.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("no CUDA device: %s runs on the CPU, which is slow (minutes per frame for "
                    "large models); set %s to silence this", what, key)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SceneMakerError(f"config: {key} must be 'auto', 'cpu' or 'cuda[:N]', got "
                              f"{name!r}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index is not None and device.index >= count or count == 0:
            raise SceneMakerError(
                f"config: {key} is {name!r} but this machine has {count or 'no'} CUDA "
                f"device{'s' if count != 1 else ''}{'' if count else ' (or torch is a CPU build)'}"
                f"; set {key} to 'cpu' or 'auto'")
    elif device.type != "cpu":
        raise SceneMakerError(f"config: {key} must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    return device


def resolve_dtype(name: str, device: torch.device, key: str = "dtype") -> torch.dtype:
    """The parameter dtype a config's ``dtype`` string names; "auto": bfloat16 (or float16 where
    unsupported) on CUDA, float32 on the CPU."""
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise SceneMakerError(f"config: {key} must be one of {['auto', *DTYPES]}, got {name!r}")
    return DTYPES[name]


def from_pretrained(load_fn: Callable[..., Model], model: str, what: str, offline: bool,
                    key: str = "model", hub_id: str = "", **kwargs: Any) -> Model:
    """``load_fn(model, local_files_only=offline, **kwargs)`` (a ``from_pretrained``) with one
    SceneMakerError line when the weights are missing or unreadable.

    model: hub id or local folder; what: the backend, for the message; key: the config key that
    names the model; hub_id: the checkpoint to suggest downloading when model is a local folder.
    """
    hub_id = model if HUB_ID.match(model) else (hub_id or "<hub id>")
    offline_key = key.rsplit(".", 1)[0] + ".offline" if "." in key else "offline"

    def missing(reason: str) -> SceneMakerError:
        return SceneMakerError(
            f"{what}: weights {model!r} {reason}: on a machine with network run `hf download "
            f"{hub_id} --local-dir <folder>`, copy the folder here and set {key} to it"
            f"{f' (or set {offline_key}: false to download)' if offline else ''}")

    if not HUB_ID.match(model) and not Path(model).exists():
        raise missing("not found (no such folder)")
    try:
        return load_fn(model, local_files_only=offline, **kwargs)
    except OSError as err:
        where = "not found offline" if offline else "could not be loaded"
        raise missing(f"{where} ({_one_line(err)})") from err
    except Exception as err:  # an unreadable checkpoint: truncated safetensors, bad config
        if type(err).__name__ not in ("SafetensorError", "JSONDecodeError", "HeaderTooLarge"):
            raise
        raise missing(f"unreadable ({_one_line(err)})") from err


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit] + "..."


def place(module: Any, device: torch.device, dtype: torch.dtype, cpu_offload: bool = False,
          free_after_use: bool = False) -> Any:
    """Cast module to dtype (an nn.Module, put in eval mode; a diffusers pipeline is loaded in
    its dtype) and put it where it waits between calls: on device; on the CPU with offload hooks
    that move each part to the GPU as it runs (cpu_offload: the pipeline's
    ``enable_model_cpu_offload``, else accelerate's ``cpu_offload``); or on the CPU until
    ``gpu_call`` (free_after_use)."""
    if isinstance(module, nn.Module):  # a pipeline is loaded in its dtype (``dtype=``)
        module = module.to(dtype=dtype).eval()
    if device.type != "cuda":
        return module.to(device)
    if cpu_offload:
        if hasattr(module, "enable_model_cpu_offload"):
            module.enable_model_cpu_offload(device=device)
        else:
            from accelerate import cpu_offload as offload

            offload(module, execution_device=device)
        return module
    return module.to("cpu" if free_after_use else device)


def free_cuda_memory(*modules: Any) -> None:
    """Move modules to the CPU and return the CUDA cache to the driver."""
    for module in modules:
        module.to("cpu")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def out_of_memory_hint(what: str, key: str) -> Iterator[None]:
    """Turn ``torch.cuda.OutOfMemoryError`` into one SceneMakerError line with the fixes; key is
    the backend's config section (``pipeline.segmentation.grounded_sam``)."""
    try:
        yield
    except torch.cuda.OutOfMemoryError as err:
        gc.collect()
        torch.cuda.empty_cache()
        raise SceneMakerError(
            f"{what}: out of GPU memory ({_one_line(err, 120)}); set {key}.dtype: float16, "
            f"{key}.cpu_offload: true or {key}.free_after_use: true, or choose a smaller "
            "model") from err


@contextmanager
def gpu_call(what: str, key: str, modules: list[Any], device: torch.device,
             free_after_use: bool) -> Iterator[None]:
    """Run a call with modules on device: with free_after_use they move there first and back to
    the CPU afterwards, and the CUDA cache is emptied; an OOM becomes ``out_of_memory_hint``'s
    error. Modules under cpu_offload hooks are left where they are."""
    move = free_after_use and device.type == "cuda"
    modules = [m for m in modules if not hasattr(m, "_hf_hook")]  # offloaded: accelerate moves
    with out_of_memory_hint(what, key), torch.inference_mode():
        try:
            if move:
                for module in modules:
                    module.to(device)
            yield
        finally:
            if move:
                free_cuda_memory(*modules)


def require(package: str, what: str) -> ModuleType:
    """Import package (transformers, diffusers, ...) or raise SceneMakerError saying how to
    install it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise SceneMakerError(f"{what} needs the {package} package: run `.venv/bin/pip install -r "
                              f"requirements.txt` (it pins {package})") from err


@dataclass
class Runtime:
    """Where one heavy backend's models run, from its config section (module docstring).

    key: the section's dotted name (``pipeline.depth.depth_pro``), for messages; what: the
    backend's name.
    """

    what: str
    key: str
    device: torch.device
    dtype: torch.dtype
    offline: bool = True
    cpu_offload: bool = False
    free_after_use: bool = False

    @classmethod
    def from_config(cls, cfg: Any, key: str, what: str) -> Runtime:
        device = resolve_device(cfg.device, f"{key}.device", what)
        return cls(what, key, device, resolve_dtype(cfg.dtype, device, f"{key}.dtype"),
                   cfg.offline, cfg.cpu_offload, cfg.free_after_use)

    def load(self, load_fn: Callable[..., Model], model: str, model_key: str = "model",
             hub_id: str = "", **kwargs: Any) -> Model:
        """``from_pretrained`` with this section's offline flag and key names."""
        return from_pretrained(load_fn, model, self.what, self.offline, f"{self.key}.{model_key}",
                               hub_id, **kwargs)

    def place(self, module: Any) -> Any:
        """``place`` with this section's device, dtype and memory options."""
        return place(module, self.device, self.dtype, self.cpu_offload, self.free_after_use)

    def call(self, *modules: Any) -> AbstractContextManager[None]:
        """``gpu_call`` for modules: run them on the device, free memory after if asked (not
        under cpu_offload, whose hooks move the weights)."""
        return gpu_call(self.what, self.key, list(modules), self.device,
                        self.free_after_use and not self.cpu_offload)
