"""Read a PyTorch state dict (``torch.save`` of a dict of tensors) without torch, safely.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names. This
reader admits exactly the globals a state dict needs — ``collections.OrderedDict``, torch's
tensor rebuild function and its typed storage classes — and refuses any other with
:class:`~elastichash.errors.ModelContractError`. Tensors come back as numpy arrays.

Both on-disk layouts are read: the legacy one (``_use_new_zipfile_serialization=False``, which
the EfficientNet-Lite0 wheel uses: a magic-number pickle, a protocol pickle, a system-info
pickle, the state-dict pickle, a pickle of storage keys, then each storage's raw bytes after
an 8-byte element count) and the zip archive that torch writes since 1.6.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.errors import ModelContractError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
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


class _StorageType:
    """Stands in for ``torch.FloatStorage`` and friends: only carries the dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    """A storage referenced by the pickle; its bytes are attached once they are read."""

    def __init__(self, dtype: np.dtype[Any], key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel
        self.data: npt.NDArray[Any] | None = None


class _PendingTensor:
    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialise(self) -> npt.NDArray[Any]:
        data = self.storage.data
        if data is None:
            raise ModelContractError(f"storage {self.storage.key} has no data in the file")
        item = data.dtype.itemsize
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if self.size and min(self.size) > 0 and need >= data.size:
            raise ModelContractError(f"tensor view runs past storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset :],
            shape=self.size,
            strides=tuple(s * item for s in self.stride),
            writeable=False,
        )
        return np.array(view, copy=True)


def _rebuild_tensor_v2(
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    hooks: Any = None,
    metadata: Any = None,
) -> _PendingTensor:
    return _PendingTensor(storage, int(offset), tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, requires_grad: bool, hooks: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any, storages: dict[str, _Storage]) -> None:
        super().__init__(fh)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelContractError(
                f"refusing to unpickle {module}.{name}: a state dict holds only tensors and "
                "their storages"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelContractError(f"unexpected persistent id {pid!r:.80}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(stype, _StorageType):
            raise ModelContractError(f"unsupported storage type {stype!r:.80}")
        if key not in self._storages:
            self._storages[key] = _Storage(stype.dtype, key, numel)
        return self._storages[key]


def _collect(obj: Any) -> dict[str, npt.NDArray[Any]]:
    if not isinstance(obj, dict):
        raise ModelContractError(f"expected a state dict, found {type(obj).__name__}")
    out: dict[str, npt.NDArray[Any]] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, _PendingTensor):
            raise ModelContractError(f"state dict entry {key!r:.60} is not a named tensor")
        out[key] = value.materialise()
    return out


def _read_legacy(data: bytes) -> dict[str, npt.NDArray[Any]]:
    fh = io.BytesIO(data)
    storages: dict[str, _Storage] = {}

    def plain() -> Any:
        return _Unpickler(fh, storages).load()

    if plain() != _LEGACY_MAGIC:
        raise ModelContractError("not a PyTorch file (bad magic number)")
    if plain() != 1001:
        raise ModelContractError("unsupported PyTorch legacy protocol version")
    info = plain()
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise ModelContractError("only little-endian PyTorch files are supported")
    state = _Unpickler(fh, storages).load()
    keys = plain()
    if not isinstance(keys, list):
        raise ModelContractError("malformed storage key list")
    for key in keys:
        st = storages.get(str(key))
        head = fh.read(8)
        if st is None or len(head) != 8:
            raise ModelContractError(f"storage {key} is missing or truncated")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * st.dtype.itemsize
        raw = fh.read(nbytes)
        if numel != st.numel or len(raw) != nbytes:
            raise ModelContractError(f"storage {key} is truncated")
        st.data = np.frombuffer(raw, dtype=st.dtype)
    return _collect(state)


def _read_zip(data: bytes) -> dict[str, npt.NDArray[Any]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ModelContractError("PyTorch archive without exactly one data.pkl")
        root = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        state = _Unpickler(io.BytesIO(zf.read(pkl[0])), storages).load()
        for key, st in storages.items():
            try:
                raw = zf.read(f"{root}data/{key}")
            except KeyError:
                raise ModelContractError(f"storage {key} is missing from the archive") from None
            if len(raw) != st.numel * st.dtype.itemsize:
                raise ModelContractError(f"storage {key} has the wrong size")
            st.data = np.frombuffer(raw, dtype=st.dtype)
    return _collect(state)


def load_state_dict(path: Path | str) -> dict[str, npt.NDArray[Any]]:
    """The named tensors of a ``.pth`` state dict, as numpy arrays (in file order)."""
    data = Path(path).read_bytes()
    try:
        if data[:4] == b"PK\x03\x04":
            return _read_zip(data)
        return _read_legacy(data)
    except ModelContractError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ModelContractError(f"{path} is not a readable PyTorch state dict: {exc}") from None
