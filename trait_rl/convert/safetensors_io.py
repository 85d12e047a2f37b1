"""Read `.safetensors` files into numpy arrays without torch and without pickle.

The format is an 8-byte little-endian header length, a JSON header mapping each tensor name to
its dtype, shape and byte range, then the raw little-endian data. Reading it directly (instead of
through `safetensors.numpy`) keeps bfloat16 tensors, which most released checkpoints use and
numpy has no dtype for: they come back as `ml_dtypes.bfloat16` arrays.
"""

import json
import pathlib
import struct

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
# A header larger than this is treated as a corrupt file; real headers are a few MB at most.
_MAX_HEADER_BYTES = 100_000_000


def read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Return every tensor of one `.safetensors` file, memory-mapped and read-only."""
    path = pathlib.Path(path)
    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is not a safetensors file: it is shorter than 8 bytes")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > _MAX_HEADER_BYTES:
            raise ValueError(f"{path} is not a safetensors file: header size {header_size}")
        header = json.loads(file.read(header_size))
    header.pop("__metadata__", None)
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    return {name: _tensor(path, name, entry, data) for name, entry in header.items()}


def _tensor(path: pathlib.Path, name: str, entry: dict, data: np.ndarray) -> np.ndarray:
    if entry["dtype"] not in _DTYPES:
        raise ValueError(
            f"{path}: tensor {name} has dtype {entry['dtype']}, which this reader does not "
            f"support; supported: {', '.join(_DTYPES)}"
        )
    dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
    start, end = entry["data_offsets"]
    shape = tuple(entry["shape"])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if end - start != expected or end > data.size:
        raise ValueError(
            f"{path}: tensor {name} with shape {shape} and dtype {entry['dtype']} needs "
            f"{expected} bytes but its data_offsets are [{start}, {end}]; the file is corrupt"
        )
    return data[start:end].view(dtype).reshape(shape)


def read_checkpoint_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
    """Return all tensors of a Hugging Face checkpoint directory, single-file or sharded.

    A sharded checkpoint lists its files in `model.safetensors.index.json` under `weight_map`.
    """
    directory = pathlib.Path(directory)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(directory / shard))
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError(f"{index_path} lists tensors missing from its shards: {missing[:5]}")
        return tensors
    if (directory / SINGLE_FILE).is_file():
        return read_safetensors(directory / SINGLE_FILE)
    raise FileNotFoundError(
        f"no {SINGLE_FILE} or {INDEX_FILE} in {directory}; save the model with "
        "save_pretrained(..., safe_serialization=True) (pickle .bin files are not read)"
    )
