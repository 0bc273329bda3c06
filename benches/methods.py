"""Every method the harness measures, in one table, and how each round trip is checked.

A method encodes a workload's tensors to a *blob* (``bytes``, a list of ``bytes``, or a
file path) and has one or more decoders back to ``dict[str, np.ndarray]``. tensorwire is
driven through its public API only (``tw.encode``, ``tw.decode``, ``tw.save``/``tw.load``,
``tw.chunk``/``tw.Reassembler``, codec spec strings).

Availability: a codec spec whose stage the installed tensorwire does not know, or an API
name it does not export, makes the method "not available in this build" (listed in the
report, not a failure). A method that is available and raises, or whose round trip is
not bit-exact (lossless) or not within its tolerance (lossy), fails the run.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import peers
from workloads import Workload

import tensorwire as tw

__all__ = [
    "CHUNK_BYTES",
    "TW_CODECS",
    "Method",
    "RoundTripError",
    "all_methods",
    "check_round_trip",
    "error_bound",
    "is_float",
    "method_availability",
]

Tensors = dict[str, np.ndarray]
Blob = Any

#: Chunk size for the chunk + reassemble method: Kafka's and NATS's default message limit.
CHUNK_BYTES = 1 << 20

# fmt: off
#: The tensorwire codecs measured: (spec, group). Groups: "lossless" (bit-exact), "lossy"
#: (within error_bound), "delta" (encoded against a base; exact when the spec is lossless).
#: Specs with a stage the installed build lacks are reported as not available.
TW_CODECS: list[tuple[str, str]] = [
    ("raw", "lossless"),
    ("lz4", "lossless"),
    ("zstd:1", "lossless"),
    ("zstd", "lossless"),
    ("shuffle+lz4", "lossless"),
    ("shuffle+zstd:1", "lossless"),
    ("shuffle+zstd", "lossless"),
    ("auto", "lossless"),
    ("floatzip", "lossless"),       # float-aware: sign-rotated byte planes, entropy-coded
    ("f16", "lossy"),
    ("f16+zstd", "lossy"),
    ("bf16", "lossy"),
    ("bf16+zstd", "lossy"),
    ("bf16+floatzip", "lossy"),
    ("int8", "lossy"),
    ("int8:channel", "lossy"),
    ("int8+zstd", "lossy"),
    ("int8:channel:stochastic=7", "lossy"),
    ("xor+zstd", "delta"),
    ("delta+f16+zstd", "delta"),
    ("delta+topk:0.01+zstd", "delta"),
    ("delta+topk:0.01+f16+zstd", "delta"),
]
# fmt: on

_LOSSY_STAGES = ("f16", "bf16", "int8", "topk", "threshold", "delta")


def is_lossless(spec: str) -> bool:
    """True when no stage of ``spec`` loses information (``xor`` deltas are exact)."""
    return not any(s.split(":")[0] in _LOSSY_STAGES for s in spec.split("+"))


class RoundTripError(AssertionError):
    """A decoded result differs from the input beyond what the method allows."""


@dataclass
class Method:
    """One row of a results table."""

    name: str
    group: str  # "peer", "compressor", "lossless", "lossy", "delta", "io", "chunk"
    encode: Callable[[Workload], Blob]
    #: decoder label -> function; the first one is "the" decode of the method
    decoders: dict[str, Callable[[Blob, Workload], Tensors]]
    #: codec spec for tensorwire methods (drives the error bound); None for peers
    spec: Optional[str] = None
    exact: bool = True
    slow: bool = False  # skipped on workloads that ask to skip slow peers
    description: str = ""
    requires: tuple[str, ...] = field(default_factory=tuple)


def blob_size(blob: Blob) -> int:
    """Bytes on the wire: a bytes object, a list of message parts, or a file."""
    if isinstance(blob, (str, os.PathLike)):
        return os.path.getsize(blob)
    if isinstance(blob, list):
        return sum(len(b) for b in blob)
    return len(blob)


# -- tensorwire ----------------------------------------------------------------------------
#: Stages meant for float tensors: a pipeline with one is applied to float tensors only
#: (other tensors stay raw), as a user would write it with a callable codec.
_FLOAT_STAGES = ("f16", "bf16", "int8", "topk", "threshold", "delta", "floatzip")


def is_float(a: np.ndarray) -> bool:
    """A float tensor, bfloat16 (ml_dtypes, numpy kind "V") included."""
    return a.dtype.kind == "f" or a.dtype.name == "bfloat16"


def _codec_arg(spec: str) -> Any:
    if not any(s.split(":")[0] in _FLOAT_STAGES for s in spec.split("+")):
        return spec
    return lambda name, a: spec if is_float(a) else "raw"


def _tw_encode(spec: str) -> Callable[[Workload], bytes]:
    codec = _codec_arg(spec)

    def encode(w: Workload) -> bytes:
        return tw.encode(w.tensors, codec=codec, base=w.base)

    return encode


def _tw_decoders(spec: str, group: str) -> dict[str, Callable[[Blob, Workload], Tensors]]:
    def verified(blob: bytes, w: Workload) -> Tensors:
        return tw.decode(blob, base=w.base, verify=True)

    def unverified(blob: bytes, w: Workload) -> Tensors:
        return tw.decode(blob, base=w.base, verify=False)

    def copied(blob: bytes, w: Workload) -> Tensors:
        return tw.decode(blob, base=w.base, verify=True, copy=True)

    if spec != "raw":  # compressed tensors are always decoded into new arrays
        if group == "lossless":  # unverified too: what the compressor peers do
            return {"decode": verified, "decode verify=False": unverified}
        return {"decode": verified}
    return {"decode": verified, "decode verify=False": unverified, "decode copy=True": copied}


def _tw_codec_method(spec: str, group: str) -> Method:
    return Method(
        name=f"tw {spec}",
        group=group,
        encode=_tw_encode(spec),
        decoders=_tw_decoders(spec, group),
        spec=spec,
        exact=is_lossless(spec),
        description=f"tw.encode(codec={spec!r})",
    )


def _io_methods(tmpdir: str) -> list[Method]:
    tw_path = os.path.join(tmpdir, "bench.tw")
    st_path = os.path.join(tmpdir, "bench.safetensors")

    def tw_save(w: Workload) -> str:
        tw.save(w.tensors, tw_path)
        return tw_path

    def tw_load(path: str, w: Workload) -> Tensors:
        return tw.load(path, verify=True)

    def tw_load_noverify(path: str, w: Workload) -> Tensors:
        return tw.load(path, verify=False)

    def st_save(w: Workload) -> str:
        from safetensors.numpy import save_file

        save_file(w.tensors, st_path)
        return st_path

    def st_load(path: str, w: Workload) -> Tensors:
        from safetensors.numpy import load_file

        return load_file(path)

    return [
        Method(
            "tw save/load",
            "io",
            tw_save,
            {"decode": tw_load, "decode verify=False": tw_load_noverify},
            spec="raw",
            description="tw.save to a file (synced to disk, then renamed), tw.load (mmap)",
            requires=("save", "load"),
        ),
        Method(
            "safetensors file",
            "io",
            st_save,
            {"decode": st_load},
            description="safetensors.numpy save_file / load_file",
        ),
    ]


def _reassemble(pieces: list[bytes], w: Workload) -> Tensors:
    r = tw.Reassembler()  # verifies the finished payload before returning it
    whole = None
    for p in pieces:
        got = r.add(p)
        if got is not None:
            whole = got
    if whole is None:
        raise RoundTripError("Reassembler did not return the payload after every chunk")
    return tw.decode(whole, verify=False)  # already verified by the Reassembler


def _chunk_methods() -> list[Method]:
    mib = CHUNK_BYTES >> 20

    def encode_then_chunk(w: Workload) -> list[bytes]:
        return list(tw.chunk(tw.encode(w.tensors), CHUNK_BYTES))

    def encode_chunks(w: Workload) -> list[bytes]:
        return list(tw.encode_chunks(w.tensors, CHUNK_BYTES))

    return [
        Method(
            f"tw raw + chunk {mib} MiB",
            "chunk",
            encode_then_chunk,
            {"decode": _reassemble},
            spec="raw",
            description=f"tw.encode, tw.chunk into {mib} MiB pieces; tw.Reassembler, tw.decode",
            requires=("chunk", "Reassembler"),
        ),
        Method(
            f"tw encode_chunks {mib} MiB",
            "chunk",
            encode_chunks,
            {"decode": _reassemble},
            spec="raw",
            description="tw.encode_chunks (streaming, never the whole payload); as above",
            requires=("encode_chunks", "Reassembler"),
        ),
    ]


def all_methods(tmpdir: str) -> list[Method]:
    """The full table: peers and compressor peers first, then tensorwire codecs, file I/O,
    chunking."""
    out = [
        Method(
            name,
            group,
            (lambda f: lambda w: f(w.tensors))(enc),
            {"decode": (lambda f: lambda b, w: f(b, w.tensors))(dec)},
            description=desc,
            slow=name == "np.savez_compressed",
        )
        for group, table in (("peer", peers.PEERS), ("compressor", peers.COMPRESSORS))
        for name, enc, dec, desc in table
    ]
    out += [_tw_codec_method(spec, group) for spec, group in TW_CODECS]
    out += _io_methods(tmpdir)
    out += _chunk_methods()
    return out


_UNKNOWN_STAGE = re.compile(r"unknown codec stage|unknown codec|unsupported codec", re.I)


def method_availability(m: Method) -> Optional[str]:
    """None when ``m`` can run on this build, else why not ("not available in this build").

    A probe encode on a tiny float32 tensor tells whether the build knows every stage of
    the spec; any other error from the probe is not swallowed here: the measured run will
    raise it again and fail.
    """
    missing = [name for name in m.requires if not hasattr(tw, name)]
    if missing:
        return f"tensorwire has no {', '.join('tw.' + n for n in missing)}"
    if m.spec is None or m.spec == "raw":
        return None
    probe = {"probe": np.linspace(-1, 1, 128, dtype=np.float32).reshape(8, 16)}
    base = {"probe": np.zeros((8, 16), np.float32)} if m.group == "delta" else None
    try:
        tw.encode(probe, codec=m.spec, base=base)
    except tw.TensorwireError as e:
        if _UNKNOWN_STAGE.search(str(e)):
            return f"codec {m.spec!r}: {e}"
    return None


# -- round-trip checks ---------------------------------------------------------------------
def _kth_largest_abs(v: np.ndarray, fraction: float) -> float:
    a = np.abs(v.ravel())
    if a.size == 0:
        return 0.0
    k = max(1, int(fraction * a.size))
    return float(np.partition(a, a.size - k)[a.size - k])


def error_bound(spec: str, x: np.ndarray, base: Optional[np.ndarray]) -> np.ndarray:
    """Largest absolute error each element may have after a round trip through ``spec``.

    Composed stage by stage from each lossy stage's documented bound: f16 and bf16 round
    to nearest (half an ulp: 2^-11 and 2^-8 relative, plus f16's subnormal spacing),
    int8 within one step (max|v|/127, which also covers stochastic rounding), top-k
    drops values no larger than the k-th largest magnitude, threshold:t drops |v| < t,
    and a float delta adds two float32 roundings (new - base, base + delta).
    """
    xd = x.astype(np.float64)
    v = xd if base is None else xd - base.astype(np.float64)
    err = np.zeros_like(xd)
    for stage in spec.split("+"):
        name, _, arg = stage.partition(":")
        if name == "f16":
            err += np.abs(v) * 2.0**-11 + 2.0**-25
        elif name == "bf16":
            err += np.abs(v) * 2.0**-8 + 2.0**-133
        elif name == "int8":  # scale >= max/127 by at most an ulp; q * scale rounds once
            err += (float(np.max(np.abs(v))) if v.size else 0.0) / 127.0 * (1 + 2.0**-20)
            err += np.abs(v) * 2.0**-23
        elif name == "topk":
            err += _kth_largest_abs(v, float(arg)) * (1 + 2.0**-20)  # f32 vs f64 ordering
        elif name == "threshold":
            err += float(arg)
        elif name == "delta":
            if base is not None:
                err += (np.abs(xd) + np.abs(base.astype(np.float64))) * 2.0**-23
    return err


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.nbytes != b.nbytes:
        return False
    return a.nbytes == 0 or bool(
        np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
    )


def check_round_trip(m: Method, w: Workload, out: Any) -> dict[str, float]:
    """Raise RoundTripError unless ``out`` matches ``w.tensors`` as ``m`` promises.

    Returns error statistics for lossy methods: the largest absolute error and the
    relative RMS error (of the update, for delta methods).
    """
    if not isinstance(out, dict):
        raise RoundTripError(f"{m.name}: decode returned {type(out).__name__}, not dict")
    # peers may reorder names (safetensors sorts them); tensorwire keeps the encoded order
    same_names = set(out) == set(w.tensors) if m.spec is None else list(out) == list(w.tensors)
    if not same_names:
        missing = set(w.tensors) - set(out)
        extra = set(out) - set(w.tensors)
        raise RoundTripError(f"{m.name}: names differ (missing {missing}, extra {extra})")
    max_err = 0.0
    num = den = 0.0
    for name, x in w.tensors.items():
        y = np.asarray(out[name])
        if y.dtype != x.dtype or y.shape != x.shape:
            raise RoundTripError(
                f"{m.name}: {name!r} came back {y.dtype}{list(y.shape)}, "
                f"was {x.dtype}{list(x.shape)}"
            )
        if m.exact or x.dtype.kind != "f":
            if not _same_bytes(x, y):
                raise RoundTripError(f"{m.name}: {name!r} is not bit-exact")
            continue
        base = None if w.base is None else w.base[name]
        bound = error_bound(m.spec or "", x, base)
        diff = np.abs(y.astype(np.float64) - x.astype(np.float64))
        bad = ~(diff <= bound * (1 + 1e-9) + 1e-30)
        if bad.any():
            i = int(np.flatnonzero(bad.ravel())[0])
            raise RoundTripError(
                f"{m.name}: {name!r} element {i}: error {diff.ravel()[i]:.3g} exceeds "
                f"the bound {bound.ravel()[i]:.3g} (value {x.ravel()[i]!r})"
            )
        ref = x.astype(np.float64) if base is None else x.astype(np.float64) - base
        max_err = max(max_err, float(diff.max()) if diff.size else 0.0)
        num += float(np.sum(diff**2))
        den += float(np.sum(ref**2))
    if m.exact:
        return {}
    return {"max_abs_err": max_err, "rel_rms_err": (num / den) ** 0.5 if den else 0.0}
