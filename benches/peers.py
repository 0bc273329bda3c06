"""What tensorwire is measured against, written the way their users write it.

Serializers: each peer is a pair ``encode(tensors) -> blob`` / ``decode(blob, like) ->
tensors`` (:data:`PEERS`). Aggregation: the FedAvg loop a server writes by hand over
decoded updates (:class:`NumpyFedAvg`) and Flower's own aggregation functions over
Flower's payloads (``flower_*``; Flower is imported when first used).

Float-aware lossless compressors (:data:`COMPRESSORS`: ZipNN, blosc2) are pairs of the
same shape, measured on the real-weights workloads: each compresses tensor by tensor on
as many threads as this process has cores (what tensorwire gets), and ships the names,
dtypes and shapes out of band like the raw-byte compressors.

Serializers work over a ``dict[str, np.ndarray]``; ``like`` is the original dict:
formats that carry no names or shapes of their own (the seed's list format, zstd/lz4 over
raw bytes) use it only to give the names back (and, for the raw-byte compressors, the
shapes a real application would have to ship separately). A blob is ``bytes`` or a list of ``bytes``
(Flower ships one message part per array).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import io
import os
import pickle
import warnings
from typing import Any, Optional

import numpy as np

import tensorwire as tw

__all__ = [
    "COMPRESSORS",
    "PEERS",
    "NumpyFedAvg",
    "flower_fedavg",
    "flower_legacy_fedavg",
    "flower_median",
    "flower_trimmed_mean",
    "import_compressors",
    "import_flower",
    "md5list_deserialize",
    "md5list_serialize",
    "numpy_fedavg",
    "peer_threads",
    "peer_versions",
]

Tensors = dict[str, np.ndarray]


# -- the first seed: pure-Python list format with an MD5 trailer (sent over Kafka) -----
# The seed's serialize_weights / deserialize_weights, copied with their logging and
# try/except removed (the format and every operation kept): the baseline every ratio
# refers to.
def md5list_serialize(weights: list[np.ndarray]) -> bytes:
    """The seed's ``serialize_weights``: count, then per array ndim/shape/dtype/bytes; MD5."""
    buffer = io.BytesIO()
    buffer.write(np.array([len(weights)], dtype=np.int32).tobytes())
    for w in weights:
        buffer.write(np.array([len(w.shape)], dtype=np.int32).tobytes())
        buffer.write(np.array(w.shape, dtype=np.int32).tobytes())
        dtype_str = str(w.dtype)
        buffer.write(np.array([len(dtype_str)], dtype=np.int32).tobytes())
        buffer.write(dtype_str.encode("utf-8"))
        buffer.write(w.tobytes())
    serialized_data = buffer.getvalue()
    checksum = hashlib.md5(serialized_data).digest()
    return serialized_data + checksum


def md5list_deserialize(serialized_data: bytes) -> list[np.ndarray] | None:
    """The seed's ``deserialize_weights`` (returns None on a checksum mismatch, as it does)."""
    data = serialized_data[:-16]
    received_checksum = serialized_data[-16:]
    calculated_checksum = hashlib.md5(data).digest()
    if calculated_checksum != received_checksum:
        return None
    buffer = io.BytesIO(data)
    num_arrays = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
    weights = []
    for _ in range(num_arrays):
        ndim = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
        shape = tuple(np.frombuffer(buffer.read(4 * ndim), dtype=np.int32))
        dtype_len = np.frombuffer(buffer.read(4), dtype=np.int32)[0]
        dtype_str = buffer.read(dtype_len).decode("utf-8")
        dtype = np.dtype(dtype_str)
        num_bytes = np.prod(shape) * dtype.itemsize
        array_data = np.frombuffer(buffer.read(num_bytes), dtype=dtype).reshape(shape)
        weights.append(array_data)
    return weights


def _named(like: Tensors, arrays: list[np.ndarray] | None) -> Tensors:
    if arrays is None:
        raise ValueError("checksum verification failed")
    return dict(zip(like, arrays))


def seed_encode(t: Tensors) -> bytes:
    return md5list_serialize(list(t.values()))


def seed_decode(blob: bytes, like: Tensors) -> Tensors:
    return _named(like, md5list_deserialize(blob))


# -- pickle protocol 5 (in-band) -------------------------------------------------------
def pickle_encode(t: Tensors) -> bytes:
    return pickle.dumps(t, protocol=5)


def pickle_decode(blob: bytes, like: Tensors) -> Tensors:
    return pickle.loads(blob)


# -- Flower's default: one np.save per array into a BytesIO, a list of byte strings ----
def npsave_encode(t: Tensors) -> list[bytes]:
    out = []
    for a in t.values():
        bio = io.BytesIO()
        np.save(bio, a, allow_pickle=False)
        out.append(bio.getvalue())
    return out


def npsave_decode(blob: list[bytes], like: Tensors) -> Tensors:
    return _named(like, [np.load(io.BytesIO(b), allow_pickle=False) for b in blob])


# -- np.savez / np.savez_compressed -----------------------------------------------------
def savez_encode(t: Tensors) -> bytes:
    bio = io.BytesIO()
    np.savez(bio, **t)
    return bio.getvalue()


def savez_compressed_encode(t: Tensors) -> bytes:
    bio = io.BytesIO()
    np.savez_compressed(bio, **t)
    return bio.getvalue()


def savez_decode(blob: bytes, like: Tensors) -> Tensors:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


# -- safetensors (numpy API) -------------------------------------------------------------
def safetensors_encode(t: Tensors) -> bytes:
    from safetensors.numpy import save

    return save(t)


def safetensors_decode(blob: bytes, like: Tensors) -> Tensors:
    from safetensors.numpy import load

    return load(blob)


# -- zstd / lz4 over the raw concatenated bytes (shapes shipped out of band) -------------
def _concat(t: Tensors) -> bytes:
    return b"".join(_flat_bytes(a).data for a in t.values())  # bfloat16 has no buffer format


def _split(raw: bytes, like: Tensors) -> Tensors:
    out = {}
    pos = 0
    for name, a in like.items():
        out[name] = np.frombuffer(raw, dtype=a.dtype, count=a.size, offset=pos).reshape(a.shape)
        pos += a.nbytes
    return out


def zstd_encode(t: Tensors, level: int = 3) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=level, threads=-1).compress(_concat(t))


def zstd_decode(blob: bytes, like: Tensors) -> Tensors:
    import zstandard

    return _split(zstandard.ZstdDecompressor().decompress(blob), like)


def lz4_encode(t: Tensors) -> bytes:
    import lz4.frame

    return lz4.frame.compress(_concat(t))


def lz4_decode(blob: bytes, like: Tensors) -> Tensors:
    import lz4.frame

    return _split(lz4.frame.decompress(blob), like)


# -- float-aware lossless compressors, tensor by tensor, on every core of this process -----
def peer_threads() -> int:
    """The threads a compressor peer gets: the cores this process may use, as tensorwire."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, n or 1)


def _flat_bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _from_bytes(raw: Any, a: np.ndarray) -> np.ndarray:
    return np.frombuffer(raw, dtype=a.dtype, count=a.size).reshape(a.shape)


#: The dtypes ZipNN's byte interface compresses (others are shipped as raw bytes).
_ZIPNN_DTYPES = ("float32", "bfloat16", "float16")


@functools.cache
def _zipnn(dtype: str) -> Any:
    with warnings.catch_warnings():  # zipnn decorates with torch.jit.script, deprecated
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
        from zipnn import ZipNN  # imports torch

    return ZipNN(input_format="byte", bytearray_dtype=dtype, threads=peer_threads())


def import_compressors() -> None:
    """Import ZipNN (and torch with it) and blosc2, and make ZipNN's objects, before any of
    them is timed: otherwise the first encode's warm-up, which sets the run count and the
    peak memory, would be the imports (seconds for torch)."""
    import blosc2  # noqa: F401

    for dtype in _ZIPNN_DTYPES:
        _zipnn(dtype)


def zipnn_encode(t: Tensors) -> list[bytes]:
    out = []
    for a in t.values():
        raw = _flat_bytes(a)
        if a.dtype.name in _ZIPNN_DTYPES and raw.size:
            # ZipNN reorders the bytes of the buffer it is given in place: a sender that
            # keeps its model (training goes on) hands it a copy, and so does this
            out.append(_zipnn(a.dtype.name).compress(bytearray(raw)))
        else:
            out.append(raw.tobytes())
    return out


def zipnn_decode(blob: list[bytes], like: Tensors) -> Tensors:
    out = {}
    for (name, a), b in zip(like.items(), blob):
        compressed = a.dtype.name in _ZIPNN_DTYPES and a.nbytes
        out[name] = _from_bytes(_zipnn(a.dtype.name).decompress(b) if compressed else b, a)
    return out


#: blosc2's compression level: blosc2 runs zstd at level 2 * clevel - 1, so 2 is zstd
#: level 3, the level of tensorwire's ``zstd`` stage and of ``py-zstd:3``.
BLOSC2_CLEVEL = 2


def _blosc2_encoder(bytedelta: bool) -> Any:
    def encode(t: Tensors) -> list[bytes]:
        import blosc2

        filters = [blosc2.Filter.SHUFFLE] + ([blosc2.Filter.BYTEDELTA] if bytedelta else [])
        out = []
        for a in t.values():
            cp = blosc2.CParams(
                codec=blosc2.Codec.ZSTD,
                clevel=BLOSC2_CLEVEL,
                typesize=a.dtype.itemsize,
                nthreads=peer_threads(),
                filters=filters,
                filters_meta=[0] * len(filters),
            )
            out.append(blosc2.compress2(_flat_bytes(a), cparams=cp))
        return out

    return encode


def blosc2_decode(blob: list[bytes], like: Tensors) -> Tensors:
    import blosc2

    dp = blosc2.DParams(nthreads=peer_threads())
    return {
        name: _from_bytes(blosc2.decompress2(b, dparams=dp), a)
        for (name, a), b in zip(like.items(), blob)
    }


def peer_versions() -> dict[str, str]:
    """Versions of the peer packages installed (for the report)."""
    from importlib import metadata

    out = {"numpy": np.__version__}
    pkgs = ("safetensors", "zstandard", "lz4", "zipnn", "blosc2", "blake3", "matplotlib", "psutil")
    for pkg in pkgs:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


PEERS: list[tuple[str, Any, Any, str]] = [
    # (name, encode, decode, what it is)
    ("seed md5list", seed_encode, seed_decode, "first seed: pure-Python list + MD5 (baseline)"),
    ("pickle-5", pickle_encode, pickle_decode, "pickle protocol 5, in-band"),
    ("np.save/array", npsave_encode, npsave_decode, "Flower default: np.save per array"),
    ("np.savez", savez_encode, savez_decode, "np.savez into BytesIO"),
    ("np.savez_compressed", savez_compressed_encode, savez_decode, "zip/deflate"),
    ("safetensors", safetensors_encode, safetensors_decode, "safetensors.numpy save/load"),
    ("py-zstd:3 raw", zstd_encode, zstd_decode, "zstandard over raw bytes, threads=-1"),
    ("py-lz4 raw", lz4_encode, lz4_decode, "lz4.frame over raw bytes"),
]

COMPRESSORS: list[tuple[str, Any, Any, str]] = [
    # (name, encode, decode, what it is): measured on the real-weights workloads
    (
        "ZipNN",
        zipnn_encode,
        zipnn_decode,
        "zipnn.ZipNN byte interface per float tensor (byte planes, Huffman / zstd per "
        "chunk), on a copy of each tensor; other tensors raw",
    ),
    (
        "blosc2 shuffle+zstd",
        _blosc2_encoder(False),
        blosc2_decode,
        f"blosc2.compress2 per tensor: shuffle, zstd (clevel {BLOSC2_CLEVEL}: zstd level 3)",
    ),
    (
        "blosc2 bytedelta+zstd",
        _blosc2_encoder(True),
        blosc2_decode,
        f"blosc2.compress2 per tensor: shuffle, bytedelta, zstd (clevel {BLOSC2_CLEVEL})",
    ),
]


# -- FedAvg as a server writes it by hand: decode each update, accumulate, divide ---------
class NumpyFedAvg:
    """``acc[k] += w * update[k]`` in float32 over ``tw.decode``d updates, then ``/ sum(w)``."""

    def __init__(self) -> None:
        self.acc: Optional[Tensors] = None
        self.total = 0.0

    def add(self, payload: bytes, weight: float) -> None:
        update = tw.decode(payload)
        if self.acc is None:
            self.acc = {k: np.zeros(v.shape, np.float32) for k, v in update.items()}
        for k, v in update.items():
            self.acc[k] += weight * v
        self.total += weight

    def result(self) -> Tensors:
        if self.acc is None:
            raise ValueError("no update added")
        for v in self.acc.values():
            v /= self.total
        return self.acc


def numpy_fedavg(payloads: list[bytes], weights: list[float]) -> Tensors:
    """The numpy loop over a round's payloads held in memory."""
    loop = NumpyFedAvg()
    for p, w in zip(payloads, weights):
        loop.add(p, w)
    return loop.result()


# -- Flower's aggregations, over Flower's payloads: {name: flwr.common.Array} per update ---
def import_flower() -> None:
    """Import every Flower module the functions below use (a process measuring them does
    this before its memory baseline, so Flower's import is not counted)."""
    for module in (
        "flwr.common",
        "flwr.server.strategy.aggregate",
        "flwr.serverapp.strategy.strategy_utils",
    ):
        importlib.import_module(module)


def flower_fedavg(payloads: list[dict[str, Any]], weights: list[float]) -> Tensors:
    """``flwr.serverapp.strategy.FedAvg``'s aggregation: ``aggregate_arrayrecords``."""
    from flwr.common import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    records = [
        RecordDict({"arrays": ArrayRecord(p), "metrics": MetricRecord({"n": int(w)})})
        for p, w in zip(payloads, weights)
    ]
    out = aggregate_arrayrecords(records, "n")
    return {k: v.numpy() for k, v in out.items()}


def flower_legacy_fedavg(payloads: list[dict[str, Any]], weights: list[float]) -> Tensors:
    """``flwr.server.strategy.FedAvg(inplace=True)``, the legacy default: ``aggregate_inplace``."""
    from flwr.common import Code, FitRes, Parameters, Status
    from flwr.server.strategy.aggregate import aggregate_inplace

    results = [
        (
            None,
            FitRes(
                Status(Code.OK, ""),
                Parameters([a.data for a in p.values()], "numpy.ndarray"),
                int(w),
                {},
            ),
        )
        for p, w in zip(payloads, weights)
    ]
    return dict(zip(payloads[0], aggregate_inplace(results)))


def _flower_robust(payloads: list[dict[str, Any]], combine: Any) -> Tensors:
    # Flower's FedMedian / FedTrimmedAvg: every update decoded, then each layer stacked
    names = list(payloads[0])
    results = [([a.numpy() for a in p.values()], 1) for p in payloads]
    return dict(zip(names, combine(results)))


def flower_median(payloads: list[dict[str, Any]], weights: list[float]) -> Tensors:
    """Flower's FedMedian: ``aggregate_median`` (unweighted; ``weights`` unused)."""
    from flwr.server.strategy.aggregate import aggregate_median

    return _flower_robust(payloads, aggregate_median)


def flower_trimmed_mean(payloads: list[dict[str, Any]], weights: list[float]) -> Tensors:
    """Flower's FedTrimmedAvg(beta=0.1): ``aggregate_trimmed_avg`` (``weights`` unused)."""
    from flwr.server.strategy.aggregate import aggregate_trimmed_avg

    return _flower_robust(payloads, lambda r: aggregate_trimmed_avg(r, 0.1))
