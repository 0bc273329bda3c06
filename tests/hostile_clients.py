"""The hostile-client suite: payloads an attacker forges from docs/FORMAT.md (every hash
and CRC valid, see tests/forge.py) against tensorwire's public API, each in its own
process under an address-space limit.

Every attack runs in a fresh child (``--child NAME``), and the parent reports, per
attack: the outcome (exception type and message, the signal or exit status the child
died of, "timeout", or "accepted"), wall time, peak RSS (VmHWM of the child, reset after
the payload is built; ``wait4``'s ru_maxrss when the child died), peak RSS beyond the
baseline taken just before the attack, the payload's size and a note. Each attack states
what must happen (``expect``: a pattern over outcome and note, and a bound on the extra
RSS); ``--check`` fails unless every attack meets it, the child alive. The tests run it
(tests/test_hostile_clients.py); ``make attacks`` writes benches/results/attacks.md.

    python tests/hostile_clients.py                         # everything, 4 GiB address space
    python tests/hostile_clients.py --only '1.,4.samples*' --out attacks.md   # prefixes or globs
    python tests/hostile_clients.py --list
    python tests/hostile_clients.py --check --json out.json   # what the tests run
    python tests/hostile_clients.py --as-limit-gb 0         # no limit (careful)

Attacks that name their own limit (``nolimit`` in the name) ignore ``--as-limit-gb``.
Only the public API is used, so the same script measures any version of the library.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import blake3
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forge

import tensorwire as tw
from tensorwire import errors, fl

GiB = 1 << 30


# -- the child's side -------------------------------------------------------------------


def _status(key: str) -> int:
    """A /proc/self/status field in KiB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Ctx:
    """What an attack reports: ``go(payload)`` when the payload is built (resets the peak
    RSS, starts the clock), then optional ``note`` and ``outcome`` (else the exception
    the attack raised, or "accepted")."""

    def __init__(self, result: Path) -> None:
        self.result = result
        self.payload: Optional[int] = None
        self.note = ""
        self.outcome: Optional[str] = None
        self.t0 = time.perf_counter()
        self.base_kb = _status("VmRSS")

    def _write(self, **fields: Any) -> None:
        with open(self.result, "a") as f:
            f.write(json.dumps(fields) + "\n")

    def go(self, payload: Optional[int] = None) -> None:
        self.payload = payload
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM
        except OSError:
            pass
        self.base_kb = _status("VmRSS")
        self._write(payload=payload, base_kb=self.base_kb)
        self.t0 = time.perf_counter()

    def finish(self, outcome: str) -> None:
        wall = time.perf_counter() - self.t0
        peak = max(_status("VmHWM"), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        self._write(
            outcome=self.outcome or outcome, wall=wall, peak_kb=peak, base_kb=self.base_kb,
            payload=self.payload, note=self.note,
        )  # fmt: skip


def describe(e: BaseException) -> str:
    """Exception type and the first 100 characters of its message."""
    return f"{type(e).__name__}: {str(e)[:100]}"


def attempt(fn: Callable[[], Any]) -> tuple[str, Any]:
    """(outcome, result) of fn(): "accepted" or the exception it raised."""
    try:
        return "accepted", fn()
    except Exception as e:
        return describe(e), None


@dataclass
class Attack:
    fn: Callable[[Ctx], None]
    expect: str  # a pattern that "outcome | note" must match
    max_growth_mb: Optional[float] = 256  # peak RSS beyond the baseline; None: unbounded
    as_limit_gb: Optional[float] = None  # None: the --as-limit-gb value; 0: none
    timeout: Optional[float] = None


ATTACKS: dict[str, Attack] = {}


def attack(name: str, fn: Callable[[Ctx], None], expect: str, **options: Any) -> None:
    ATTACKS[name] = Attack(fn, expect, **options)


#: The refusals the suite expects.
TW_ERROR = r"^(FormatError|IntegrityError)"
REFUSED = r"^MismatchError"


# -- 1. declared sizes far beyond the bytes ----------------------------------------------


def cli_convert(blob: bytes) -> None:
    Path("x.tw").write_bytes(blob)
    exe = Path(sys.executable).with_name("tensorwire")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "tensorwire.cli"]
    p = subprocess.run([*cmd, "convert", "x.tw", "y.safetensors"], capture_output=True)
    err = p.stderr.decode(errors="replace").strip().splitlines()
    died = f"signal {signal.Signals(-p.returncode).name}" if p.returncode < 0 else None
    if p.returncode:
        raise RuntimeError(f"CLI {died or f'exit {p.returncode}'}: {err[-1] if err else ''}")


def flower(blob: bytes) -> Any:
    from tensorwire.integrations import flower

    return tw.aggregate([flower.payload_of(flower.payload_record(blob))])


TARGETS: dict[str, Callable[[bytes], Any]] = {
    "decode": lambda b: tw.decode(b),
    "verify": lambda b: tw.open(b).verify(),
    "agg_add": lambda b: tw.Aggregator().add(b),
    "agg_template": lambda b: tw.Aggregator(template=b),
    "aggregate": lambda b: tw.aggregate([b]),
    "flower": flower,
    "cli_convert": cli_convert,
}


def tiny_table(dtype: str, shape: list[int]) -> bytes:
    """One tensor whose zstd:3 block table has one entry (one RLE frame) of millions."""
    stored = forge.twc1([forge.zstd_rle(0, 1 << 20)], block_scalars=1 << 18)
    return forge.payload([forge.T("t", dtype, shape, stored, "zstd:3")])


def sparse_zero(n: int, codec: str = "topk:0.01+zstd:3", **header: Any) -> bytes:
    """A valid sparse float32[n]: every block keeps 0 entries, so the block table (and an
    empty zstd frame per block) is all there is."""
    B = 1 << 21
    blocks = -(-n // B)
    frame = forge.zstd_raw(b"")
    stored = forge.twc1([frame] * blocks, block_scalars=B, counts=[0] * blocks)
    return forge.payload([forge.T("t", "float32", [n], stored, codec)], **header)


def rle_valid(n: int) -> bytes:
    """A valid zstd:3 float32[n] of zeros: one 1 MiB RLE frame (~45 bytes) per block."""
    B = 1 << 18
    blocks = [forge.zstd_rle(0, 4 * min(B, n - i)) for i in range(0, n, B)]
    return forge.payload(
        [forge.T("t", "float32", [n], forge.twc1(blocks, block_scalars=B), "zstd:3")]
    )


def bomb(make: Callable[[], bytes], target: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        blob = make()
        ctx.go(len(blob))
        TARGETS[target](blob)

    return run


SMALL_BASE = {"t": np.zeros(4, np.float32)}
for t in ["decode", "verify", "agg_add", "agg_template", "aggregate", "flower", "cli_convert"]:
    attack(f"1.f32[2^40].zstd_tiny_table.{t}", bomb(lambda: tiny_table("float32", [1 << 40]), t),
           TW_ERROR if t != "cli_convert" else "CLI exit 1: tensorwire: error: tensor")  # fmt: skip
for t in ["decode", "agg_add", "aggregate"]:
    attack(f"1.f32[2^31].zstd_tiny_table.{t}", bomb(lambda: tiny_table("float32", [1 << 31]), t),
           TW_ERROR)  # fmt: skip
attack("1.f32[2^31].zstd_tiny_table.decode.nolimit",
       bomb(lambda: tiny_table("float32", [1 << 31]), "decode"), TW_ERROR,
       as_limit_gb=0)  # fmt: skip
for t in ["decode", "agg_add", "aggregate"]:
    attack(f"1.f16[2^62-1].zstd_tiny_table.{t}",
           bomb(lambda: tiny_table("float16", [(1 << 62) - 1]), t), TW_ERROR)  # fmt: skip
    attack(f"1.i8[2^62].zstd_tiny_table.{t}", bomb(lambda: tiny_table("int8", [1 << 62]), t),
           TW_ERROR)  # fmt: skip
attack("1.f32[2^30]=4GiB.zstd_tiny_table.aggregate",
       bomb(lambda: tiny_table("float32", [1 << 30]), "aggregate"), TW_ERROR)  # fmt: skip
attack("1.f32[2^30]=4GiB.zstd_tiny_table.aggregate.nolimit",
       bomb(lambda: tiny_table("float32", [1 << 30]), "aggregate"), TW_ERROR,
       as_limit_gb=0)  # fmt: skip
for t in ["decode", "agg_add", "aggregate"]:
    attack(f"1.f32[2^30]=4GiB.sparse_count0(valid).{t}", bomb(lambda: sparse_zero(1 << 30), t),
           "^FormatError: decoding needs")  # fmt: skip
for t in ["decode", "aggregate"]:
    attack(f"1.f32[2^40].sparse_count0(valid).{t}", bomb(lambda: sparse_zero(1 << 40), t),
           "^FormatError: decoding needs")  # fmt: skip
attack("1.f32[2^31].zstd_rle(valid).decode", bomb(lambda: rle_valid(1 << 31), "decode"),
       "^FormatError: decoding needs")  # fmt: skip
attack("1.f32[2^31].zstd_rle(valid).decode.nolimit",
       bomb(lambda: rle_valid(1 << 31), "decode"), "^FormatError: decoding needs",
       as_limit_gb=0)  # fmt: skip


def delta_sparse(ctx: Ctx, how: str) -> None:
    bid = forge.base_id([("t", "float32", [4], bytes(16))])
    blob = sparse_zero(1 << 30, "delta+topk:0.01+zstd:3", base=bid)
    ctx.go(len(blob))
    if how == "decode":
        tw.decode(blob, base=SMALL_BASE)
    else:
        tw.Aggregator(base=SMALL_BASE).add(blob)


attack("1.f32[2^30].delta+topk(base id of a f32[4]).decode", lambda c: delta_sparse(c, "decode"),
       "^FormatError: decoding needs")  # fmt: skip
attack("1.f32[2^30].delta+topk(base id of a f32[4]).agg_base_add",
       lambda c: delta_sparse(c, "agg"), REFUSED)  # fmt: skip


# -- 2. header JSON bombs ----------------------------------------------------------------


def structure_bomb() -> bytes:
    items = b",".join([b'{"list":[]}'] * (36 * (1 << 20) // 12))
    return forge.container(b'{"tensors":[],"structure":{"list":[' + items + b"]}}", b"")


def metadata_bomb() -> bytes:
    items = b"[]," * ((64 << 20) // 3)
    return forge.container(b'{"tensors":[],"metadata":[' + items + b"[]]}", b"")


def deep(where: str) -> bytes:
    d = 1_000_000
    value = b"[" * d + b"]" * d
    return forge.container(b'{"tensors":[],"' + where.encode() + b'":' + value + b"}", b"")


def reassemble_it(blob: bytes) -> Any:
    r = tw.Reassembler(max_payload_bytes=64 << 20, max_pending_bytes=64 << 20)
    done = [x for x in (r.add(c) for c in tw.chunk(blob, 1 << 20)) if x is not None]
    return done


JSON_TARGETS: dict[str, Callable[[bytes], Any]] = {
    "open": lambda b: tw.open(b),
    "decode": lambda b: tw.decode(b),
    "reassembler": reassemble_it,
    "metadata": lambda b: tw.open(b).metadata,
    "agg_add": lambda b: tw.Aggregator().add(b),
}


def json_bomb(make: Callable[[], bytes], target: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        blob = make()
        ctx.go(len(blob))
        out = JSON_TARGETS[target](blob)
        if target == "reassembler":
            ctx.note = f"payloads delivered: {len(out)}"

    return run


for t in ["open", "decode", "reassembler"]:
    # A structure the reader refuses is not a container: tw.chunk sends it as bytes.
    expect = "^accepted.*delivered: 1" if t == "reassembler" else "^FormatError.*containers"
    attack(f"2.structure_36MiB_of_empty_lists.{t}", json_bomb(structure_bomb, t), expect)
for t in ["open", "metadata", "agg_add"]:
    # Reading .metadata makes the Python objects asked for (about 25 bytes per byte of
    # JSON here); nothing else parses it.
    attack(f"2.metadata_64MiB_of_[].{t}", json_bomb(metadata_bomb, t), "^accepted",
           max_growth_mb=None if t == "metadata" else 96)  # fmt: skip
for t in ["open", "decode"]:
    attack(f"2.depth_1M_in_unknown_key.{t}", json_bomb(lambda: deep("x"), t),
           "^FormatError.*nests")  # fmt: skip
attack("2.depth_1M_in_metadata.metadata", json_bomb(lambda: deep("metadata"), "metadata"),
       "^FormatError.*nests")  # fmt: skip


def nested(depth: int, kind: str = "dict") -> bytes:
    node: Any = 0
    for _ in range(depth):
        node = {"dict": [["k", node]]} if kind == "dict" else {"list": [node]}
    return forge.payload([forge.T("t", "int8", [1], b"\x07")], structure=node)


def max_depth(kind: str) -> int:
    ok = [
        d for d in range(1, 70) if attempt(lambda d=d: tw.decode(nested(d, kind)))[0] == "accepted"
    ]
    return max(ok, default=0)


def depth64(ctx: Ctx) -> None:
    ctx.note = f"deepest accepted: {max_depth('dict')} dicts, {max_depth('list')} lists (spec: 64)"
    blob = nested(64)
    ctx.go(len(blob))
    out = tw.decode(blob)
    for _ in range(64):
        out = out["k"]
    assert out.tolist() == [7]


attack("2.structure_64_dicts_deep(should be accepted).decode", depth64,
       "^accepted.*64 dicts, 64 lists")  # fmt: skip


# -- 3. values the dtype cannot hold, dtypes the base does not have ----------------------


def bool_bytes(ctx: Ctx, codec: str) -> None:
    if codec == "raw":
        blob = forge.payload([forge.T("b", "bool", [3], bytes([2, 3, 255]))])
        base = None
    else:
        stored = forge.twc1([bytes([2, 3, 255])], block_scalars=3)
        bid = forge.base_id([("b", "bool", [3], bytes(3))])
        blob = forge.payload([forge.T("b", "bool", [3], stored, "xor")], base=bid)
        base = {"b": np.zeros(3, bool)}
    ctx.go(len(blob))
    a = tw.decode(blob, base=base)["b"]
    ctx.note = (
        f"returned bytes {a.view(np.uint8).tolist()}; a.sum() = {a.sum()}; "
        f"~a = {(~a).tolist()} (bytes {(~a).view(np.uint8).tolist()})"
    )


attack("3.bool_holding_2_3_255.raw.decode", lambda c: bool_bytes(c, "raw"), "^IntegrityError")
attack("3.bool_holding_2_3_255.xor.decode", lambda c: bool_bytes(c, "xor"), "^IntegrityError")


def delta_dtype(ctx: Ctx, how: str) -> None:
    base = {"w": np.arange(4, dtype=np.float32)}
    bid = tw.open(tw.encode({"w": base["w"] + 1}, codec="delta", base=base)).base_id
    stored = forge.twc1([np.ones(2).tobytes()], block_scalars=2)
    blob = forge.payload([forge.T("w", "float64", [2], stored, "delta")], base=bid)
    ctx.go(len(blob))
    if how == "decode":
        ctx.note = f"decoded {tw.decode(blob, base=base)['w']!r}"
    else:
        tw.Aggregator(base=base).add(blob)
        ctx.note = "added"


attack("3.delta_f64[2]_vs_f32[4]_base.decode", lambda c: delta_dtype(c, "decode"),
       "^IntegrityError.*base tensor is float32")  # fmt: skip
attack("3.delta_f64[2]_vs_f32[4]_base.agg_base_add", lambda c: delta_dtype(c, "agg"), REFUSED)


# -- 4. poisoning the aggregate ----------------------------------------------------------

RNG = np.random.default_rng(0)
BASE = {k: RNG.standard_normal(256).astype(np.float32) for k in ("a", "b")}


def honest(i: int, samples: int = 10) -> bytes:
    local = {k: v + np.float32(0.01 * (i + 1)) for k, v in BASE.items()}
    return tw.encode_update(BASE, local, codec="zstd:3", num_samples=samples, client_id=f"h{i}")


def forged_update(a: bytes, b: bytes, b_codec: str = "raw", **record: Any) -> bytes:
    rec = {"base": fl.update_info(honest(0)).base, "samples": 10, **record}
    tensors = [forge.T("a", "float32", [256], a), forge.T("b", "float32", [256], b, b_codec)]
    return forge.payload(tensors, metadata=forge.update_metadata(**rec))


def same(x: Any, y: Any) -> bool:
    return all(np.array_equal(x[k].view(np.uint32), y[k].view(np.uint32)) for k in x)


def honest_result(n: int = 3, **kw: Any) -> Any:
    agg = tw.Aggregator(base=BASE, **kw)
    for i in range(n):
        agg.add(honest(i))
    return agg.result()


def full(v: float) -> bytes:
    return np.full(256, v, np.float32).tobytes()


def poison_corrupt(ctx: Ctx) -> None:
    frame = bytearray(forge.zstd_rle(0, 1024))
    frame[13] |= 0b110  # block type 3: reserved, an error
    bad = forged_update(full(np.inf), forge.twc1([bytes(frame)], block_scalars=256), "zstd:3")
    agg = tw.Aggregator(base=BASE)
    for i in range(3):
        agg.add(honest(i))
    ctx.go(len(bad))
    ctx.outcome, _ = attempt(lambda: agg.add(bad))
    r, want = agg.result(), honest_result()
    assert same(want, honest_result())  # the honest-only result is reproducible
    ctx.note = (
        f"count {agg.count}; result bit-identical to honest-only: {same(r, want)}; "
        f"finite: {[bool(np.isfinite(r[k]).all()) for k in r]}"
    )


def poison(
    value: float, clip: Optional[float], n_bad: int = 1, honest_n: int = 2
) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        bad = forged_update(full(value), full(value))
        agg = tw.Aggregator(base=BASE, clip_norm=clip)
        for i in range(honest_n):
            agg.add(honest(i))
        ctx.go(len(bad))
        for _ in range(n_bad):
            ctx.outcome, _ = attempt(lambda: agg.add(bad))
        r = agg.result()
        finite = all(np.isfinite(r[k]).all() for k in r)
        top = max(np.abs(r[k]).max() for k in r)
        ctx.note = f"count {agg.count}; result finite: {finite}; max |result| {top:.3g}"

    return run


attack("4.inf+corrupt_zstd_after_3_honest.agg_add", poison_corrupt,
       "^IntegrityError.*count 3; result bit-identical to honest-only: True")  # fmt: skip
# A finite 1e38 is a valid (if hostile) update: FedAvg averages it in, finitely. What
# stops it is max_norm, clip_norm or a robust method.
attack("4.update_of_1e38.agg_add", poison(1e38, None), "^accepted.*count 3; result finite: True")
attack("4.update_of_1e38.clip_norm=1", poison(1e38, 1.0), "^accepted.*result finite: True")
for v, label in [(np.nan, "nan"), (np.inf, "inf")]:
    attack(f"4.update_of_{label}.agg_add", poison(v, None),
           REFUSED + ".*must be finite.*count 2; result finite: True")  # fmt: skip
    attack(f"4.update_of_{label}.clip_norm=1", poison(v, 1.0),
           REFUSED + ".*must be finite.*count 2; result finite: True")  # fmt: skip
attack("4.two_updates_of_3e38(no honest).agg_add", poison(3e38, None, n_bad=2, honest_n=0),
       REFUSED + ".*overflow")  # fmt: skip


def samples(value: Any, how: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        bad = forged_update(full(0.5), full(0.5), samples=value)
        ctx.go(len(bad))
        if how == "aggregate":
            r = tw.aggregate([honest(0), bad], weights="samples", base=BASE)
        else:
            agg = tw.Aggregator(base=BASE)
            agg.add(honest(0), "samples")
            agg.add(bad, "samples")
            r = agg.result()
        ctx.note = f"result finite: {all(np.isfinite(r[k]).all() for k in r)}"

    return run


for value, label in [(1e39, "1e39"), (1e308, "1e308"), (-10, "-10(sum 0)"), ("abc", "'abc'"),
                     ([1], "[1]"), ({"a": 1}, "{a:1}"), (True, "true")]:  # fmt: skip
    attack(f"4.samples={label}.aggregate", samples(value, "aggregate"), REFUSED + ".*record")
    attack(f"4.samples={label}.agg_add", samples(value, "add"), REFUSED + ".*record")


def record_base(value: Any) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        bad = forged_update(full(0.5), full(0.5), base=value)
        ctx.go(len(bad))
        tw.Aggregator(base=BASE).add(bad)

    return run


attack("4.record_base=5.agg_add", record_base(5), REFUSED + '.*"base"')
attack("4.record_base=[1].agg_add", record_base([1]), REFUSED + '.*"base"')


def twice(ctx: Ctx) -> None:
    h0, h1 = honest(0), honest(1)
    ctx.go(len(h0))
    r3 = tw.aggregate([h0, h0, h1], base=BASE)
    ctx.note = f"[h0,h0,h1] == [h0,h1]: {same(r3, tw.aggregate([h0, h1], base=BASE))}"


attack("4.same_payload_twice.aggregate", twice, REFUSED + ".*same payload as update 0")


# -- 5. reassembler --------------------------------------------------------------------


def pending_million(ctx: Ctx) -> None:
    def send(add: Callable[[bytes], Any]) -> float:
        before = _status("VmRSS")
        for i in range(1_000_000):
            pid = i.to_bytes(16, "little")
            add(forge.chunk(b"x", payload_id=pid, index=0, count=2, total=2, offset=0, kind=0))
        return (_status("VmRSS") - before) / 1024

    control = send(lambda c: None)  # what the attacker's loop itself costs
    r = tw.Reassembler(max_pending_bytes=256 << 20)
    ctx.go(89 * 1_000_000)
    grew = send(r.add)
    charged = r.pending_bytes / 2**20
    ctx.outcome = (
        f"RSS +{grew:.0f} MiB, charged {charged:.0f} MiB: charged enough: {grew <= charged}"
    )
    ctx.note = f"(the loop without add: +{control:.0f} MiB); stats {r.stats}"


def legit() -> tuple[bytes, list[bytes], bytes]:
    blob = tw.encode({"w": np.arange(2500, dtype=np.float32)})
    pid = os.urandom(16)
    return blob, forge.chunks(blob, 1000, payload_id=pid), pid


def deliver(ctx: Ctx, forged: bytes, blob: bytes, pieces: list[bytes]) -> None:
    r = tw.Reassembler()
    ctx.go(len(forged))
    first, _ = attempt(lambda: r.add(forged))
    results = [attempt(lambda p=p: r.add(p)) for p in pieces]
    refused = [o for o, _ in results if o != "accepted"]
    ok = any(x == blob for _, x in results)
    ctx.outcome = f"forged piece: {first[:60]}; legit delivered: {ok}"
    ctx.note = f"{len(refused)}/{len(pieces)} legit pieces refused"
    ctx.note += f", first: {refused[0][:90]}; last: {refused[-1][:90]}" if refused else ""


def other_geometry(ctx: Ctx) -> None:
    blob, pieces, pid = legit()
    forged = forge.chunk(b"y" * 500, payload_id=pid, index=0, count=2, total=1000, offset=0,
                         digest=blob[32:64])  # fmt: skip
    deliver(ctx, forged, blob, pieces)


def body_not_yet_received(ctx: Ctx) -> None:
    blob, pieces, pid = legit()
    n = len(pieces)
    forged = forge.chunk(b"z" * 1000, payload_id=pid, index=2, count=n, total=len(blob),
                         offset=2000, digest=blob[32:64])  # fmt: skip
    deliver(ctx, forged, blob, pieces)


attack("5.1M_pending_payloads(max_pending 256MiB)", pending_million, "charged enough: True",
       max_growth_mb=None, timeout=180)  # fmt: skip
attack("5.forged_first_piece_other_geometry", other_geometry, "legit delivered: True")
attack("5.forged_body_valid_crc_unreceived_index", body_not_yet_received, "legit delivered: True")


# -- 6. files --------------------------------------------------------------------------


def fifo(ctx: Ctx) -> None:
    os.mkfifo("pipe.tw")
    ctx.go()
    tw.load("pipe.tw")


SAVE = """
import numpy as np, tensorwire as tw
sd = {f"layer{i}": np.ones((25, 1 << 20), np.float32) for i in range(5)}   # 500 MB
print("ready", flush=True)
tw.save(sd, "out/model.tw")
"""


def kill_during_save(ctx: Ctx) -> None:
    os.mkdir("out")
    leftovers, phases = [], []
    for delay in (0.0, 0.05, 0.2):
        p = subprocess.Popen([sys.executable, "-c", SAVE], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
        ctx.go(500 << 20)
        t = time.monotonic() + 30
        while not os.listdir("out") and time.monotonic() < t:
            time.sleep(0.001)
        time.sleep(delay)
        p.kill()
        p.wait()
        left = [f for f in os.listdir("out") if f != "model.tw"]
        sizes = [os.path.getsize(f"out/{f}") >> 20 for f in left]
        phases.append(f"+{delay}s: {len(left)} left ({sizes} MiB)")
        leftovers += left
        for f in os.listdir("out"):
            os.remove(f"out/{f}")
    ctx.outcome = f"{len(leftovers)} temp files left over in 3 kills"
    ctx.note = "; ".join(phases) + (f"; e.g. {leftovers[0]}" if leftovers else "")


attack("6.load_of_a_fifo", fifo, "^FormatError.*not a regular file", timeout=10)
attack(
    "6.kill-9_during_save_500MB",
    kill_during_save,
    "^0 temp files left",
    max_growth_mb=None,
    timeout=120,
)  # fmt: skip (the saver, a grandchild, holds 500 MB)


# -- 7. reader misuse --------------------------------------------------------------------


def after_close(ctx: Ctx) -> None:
    blob = tw.encode({"w": np.ones(3, np.float32)}, metadata={"m": 1})
    r = tw.open(blob)
    r.close()
    ctx.go(len(blob))
    calls: dict[str, Callable[[], Any]] = {
        "keys": r.keys, "len": lambda: len(r), "get": lambda: r["w"], "info": lambda: r.info("w"),
        "metadata": lambda: r.metadata, "content_id": lambda: r.content_id,
        "verify": r.verify, "tensors": r.tensors, "repr": lambda: repr(r),
        "close again": r.close,
    }  # fmt: skip
    got = {k: attempt(f)[0].split(":")[0] for k, f in calls.items()}
    bad = sorted({v for v in got.values() if v != "accepted" and not hasattr(errors, v)})
    ctx.outcome = f"non-tensorwire errors: {bad}" if bad else "all tensorwire errors or ok"
    ctx.note = ", ".join(f"{k}: {v}" for k, v in got.items())


def mutate_while_decoding(codec: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        x = np.random.default_rng(1).standard_normal(1 << 22).astype(np.float32)
        ba = bytearray(tw.encode({"w": x}, codec=codec))
        (h,) = struct.unpack_from("<Q", ba, 16)
        pos = 64 + h + (len(ba) - 64 - h) // 2
        stop = False

        def flip() -> None:
            while not stop:
                ba[pos] ^= 1

        th = threading.Thread(target=flip)
        ctx.go(len(ba))
        th.start()
        wrong = errors = 0
        try:
            for _ in range(200):
                outcome, out = attempt(lambda: tw.decode(ba, copy=True))
                errors += outcome != "accepted"
                wrong += out is not None and not np.array_equal(
                    out["w"].view(np.uint32), x.view(np.uint32)
                )
        finally:
            stop = True
            th.join()
        ctx.outcome = f"{wrong}/200 verified decodes returned other data"
        ctx.note = f"{errors}/200 refused"

    return run


def flips(codec: str) -> Callable[[Ctx], None]:
    def run(ctx: Ctx) -> None:
        x = (np.random.default_rng(2).standard_normal(4096) * 0.05).astype(np.float32)
        blob = tw.encode({"w": x}, codec=codec)
        (h,) = struct.unpack_from("<Q", blob, 16)
        want = tw.decode(blob)["w"]
        ctx.go(len(blob))
        silent = same_out = refused = crash = 0
        xs = np.random.default_rng(3).integers(1, 256, len(blob))
        for i in range(64 + h, len(blob)):
            bad = bytearray(blob)
            bad[i] ^= int(xs[i])
            try:
                out = tw.decode(bytes(bad), verify=False)["w"]
            except tw.TensorwireError:
                refused += 1
                continue
            except Exception:
                crash += 1
                continue
            ok = out.shape == want.shape and np.array_equal(out.view(np.uint8), want.view(np.uint8))
            same_out += ok
            silent += not ok
        n = len(blob) - 64 - h
        ctx.outcome = f"{silent}/{n} = {silent / n:.1%} of data-byte flips silently accepted"
        ctx.note = f"{refused} refused, {same_out} decoded unchanged, {crash} non-tensorwire errors"

    return run


attack("7.methods_after_close", after_close, "^all tensorwire errors or ok")
for codec in ["raw", "zstd:3"]:
    attack(f"7.bytearray_mutated_during_verified_decode.{codec}", mutate_while_decoding(codec),
           "^0/200 verified decodes returned other data")  # fmt: skip
for codec in ["raw", "zstd:3", "lz4", "shuffle+zstd:3", "floatzip", "int8+zstd:3",
              "topk:0.1+f16+zstd:3"]:  # fmt: skip
    # verify=False skips the data checksums (as documented): damage can go unnoticed, but
    # every decode has the declared shape and nothing but a tensorwire error escapes.
    attack(f"7.verify=False_byte_flips.{codec}", flips(codec), "0 non-tensorwire errors",
           timeout=300)  # fmt: skip


# -- 8. trust: forgeries against authenticated and signed payloads ---------------------

AUTH_ERROR = r"^AuthenticationError"
TRUST_KEY = bytes(range(32))


def keyed_preamble(blob: bytes, *, auth: int = 1, flags: int = 0) -> bytes:
    """``blob`` (a forged 1.0 payload) as minor 1 with preamble bytes 12 and 13 set and
    the header hash recomputed plainly: the keyed hash an attacker cannot compute."""
    (h,) = struct.unpack_from("<Q", blob, 16)
    fixed = blob[:10] + struct.pack("<HBB", 1, auth, flags) + blob[14:32]
    return fixed + blake3.blake3(fixed + blob[64 : 64 + h]).digest() + blob[64:]


def keyed_bomb(ctx: Ctx) -> None:
    # A keyed payload whose header is a 1,000,000-deep JSON bomb: refused before any
    # document is built, as a payload that cannot be authenticated.
    blob = keyed_preamble(deep("auth"))
    ctx.go(len(blob))
    tw.decode(blob, key=TRUST_KEY)


def keyed_tiny_table(ctx: Ctx) -> None:
    # 4 GiB declared behind a forged keyed header with a valid plain hash: refused at the
    # keyed hash, before the framing is even looked at.
    blob = tiny_table("float32", [1 << 40])
    doc = forge.header_of(blob)
    doc["auth"] = {"key_id": tw.key_id(TRUST_KEY), "created": 0, "nonce": "00" * 16}
    (h,) = struct.unpack_from("<Q", blob, 16)
    forged = forge.container(doc, blob[64 + h :], minor=1)
    ctx.go(len(forged))
    tw.decode(keyed_preamble(forged), key=TRUST_KEY)


def signed_garbage(ctx: Ctx) -> None:
    # A signed payload whose trailer is 64 random bytes and whose signer is random:
    # refused (the signature must verify whether or not anyone is trusted).
    blob = tiny_table("float32", [1 << 40])
    doc = forge.header_of(blob)
    doc["auth"] = {"created": 0, "nonce": "00" * 16, "signer": os.urandom(32).hex()}
    (h,) = struct.unpack_from("<Q", blob, 16)
    forged = keyed_preamble(forge.container(doc, blob[64 + h :]), auth=0, flags=1)
    forged += os.urandom(64)
    ctx.go(len(forged))
    tw.decode(forged)


def stripped_auth(ctx: Ctx) -> None:
    # An authenticated honest update with its auth byte cleared and a tensor changed,
    # every plain hash recomputed: the aggregator's reader holds the key and refuses it.
    honest_blob = tw.encode(BASE, key=TRUST_KEY)
    doc = forge.header_of(honest_blob)
    del doc["auth"]
    (h,) = struct.unpack_from("<Q", honest_blob, 16)
    data = bytearray(honest_blob[64 + h :])
    data[0] ^= 0xFF
    for t in doc["tensors"]:
        t["hash"] = blake3.blake3(bytes(data[t["offset"] : t["offset"] + t["length"]])).hexdigest()
    forged = forge.container(doc, bytes(data))
    ctx.go(len(forged))
    tw.decode(forged, key=TRUST_KEY)


attack("8.keyed_json_bomb.decode", keyed_bomb, AUTH_ERROR + ".*cannot be authenticated")
attack("8.keyed_f32[2^40]_forged_plain_hash.decode", keyed_tiny_table, AUTH_ERROR + ".*MAC")
attack("8.signed_f32[2^40]_random_trailer.decode", signed_garbage, AUTH_ERROR + ".*verify")
attack("8.auth_stripped_tensor_changed.decode_with_key", stripped_auth,
       AUTH_ERROR + ".*not authenticated")  # fmt: skip


# -- the parent's side -------------------------------------------------------------------


def run_child(name: str, result: str) -> None:
    import faulthandler

    faulthandler.enable()
    ctx = Ctx(Path(result))
    try:
        ATTACKS[name].fn(ctx)
        outcome = "accepted"
    except BaseException as e:
        outcome = describe(e)
    ctx.finish(outcome)


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    spec = ATTACKS[name]
    limit = args.as_limit_gb if spec.as_limit_gb is None else spec.as_limit_gb
    timeout = spec.timeout or args.timeout
    with tempfile.TemporaryDirectory(prefix="tw-attack-") as d:
        res, errf = Path(d, "result.jsonl"), open(Path(d, "stderr"), "w+b")

        def pre() -> None:
            if limit:
                resource.setrlimit(resource.RLIMIT_AS, (int(limit * GiB),) * 2)

        t0 = time.perf_counter()
        p = subprocess.Popen(
            [sys.executable, __file__, "--child", name, "--result", str(res)], cwd=d,
            stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, preexec_fn=pre,
            start_new_session=True,
        )  # fmt: skip
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        try:
            os.killpg(p.pid, signal.SIGKILL)  # grandchildren (the CLI, tw.save) too
        except ProcessLookupError:
            pass
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in res.read_text().splitlines()] if res.exists() else []
        row: dict[str, Any] = {"name": name, "limit": limit, "payload": None, "note": ""}
        for x in lines:
            row.update(x)
        if "outcome" not in row:  # the child did not finish
            errf.seek(0)
            err = [x for x in errf.read().decode(errors="replace").splitlines() if x.strip()]
            code = p.returncode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
            row["outcome"] = (
                f"timeout after {timeout:g} s" if timed_out.is_set()
                else f"died: {how}: {err[0][:100] if err else ''}"
            )  # fmt: skip
            row.update(wall=wall, peak_kb=usage.ru_maxrss, died=True)
        errf.close()
    return row


def verdict(row: dict[str, Any]) -> Optional[str]:
    """Why ``row`` fails its attack's expectation, or None when it meets it."""
    spec = ATTACKS[row["name"]]
    seen = f"{row['outcome']} | {row['note']}"
    if row.get("died"):
        return f"the child did not survive: {row['outcome']}"
    if not re.search(spec.expect, seen):
        return f"expected /{spec.expect}/, got: {seen[:300]}"
    growth = (row["peak_kb"] - row["base_kb"]) / 1024 if "base_kb" in row else None
    if spec.max_growth_mb is not None and growth is not None and growth > spec.max_growth_mb:
        return f"peak RSS grew {growth:.0f} MiB, more than {spec.max_growth_mb:g}"
    return None


def mib(kb: Optional[float]) -> str:
    return "—" if kb is None else f"{kb / 1024:,.0f}"


def size(n: Optional[int]) -> str:
    if n is None:
        return "—"
    for unit, k in [("GiB", 30), ("MiB", 20), ("KiB", 10)]:
        if n >= 1 << k:
            return f"{n / (1 << k):.1f} {unit}"
    return f"{n} B"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| attack | AS limit | outcome | wall s | peak RSS MiB | +RSS MiB | payload | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        died = r.get("died")
        extra = None if died or "base_kb" not in r else r["peak_kb"] - r["base_kb"]
        star = "*" if died else ""
        cells = [
            f"`{r['name']}`", f"{r['limit']:g} GiB" if r["limit"] else "none", r["outcome"],
            f"{r['wall']:.3f}{star}", mib(r["peak_kb"]) + star, mib(extra),
            size(r["payload"]), r["note"],
        ]  # fmt: skip
        out.append(
            "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", help="write the table as markdown to this file")
    ap.add_argument("--only", help="comma-separated name prefixes or globs ('1.,4.samples*')")
    ap.add_argument("--timeout", type=float, default=60, help="per attack, seconds (60)")
    ap.add_argument("--as-limit-gb", type=float, default=4, help="child address space (4; 0: none)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless every attack is met")
    ap.add_argument("--json", help="write the rows (with their verdicts) as JSON to this file")
    ap.add_argument("--list", action="store_true", help="list the attacks")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return run_child(args.child, args.result)
    names = list(ATTACKS)
    if args.only:
        pats = [p.strip() for p in args.only.split(",")]
        names = [
            n for n in names if any(n.startswith(p) or fnmatch.fnmatchcase(n, p) for p in pats)
        ]
    if args.list:
        print("\n".join(names))
        return
    rows = []
    for name in names:
        row = measure(name, args)
        row["verdict"] = verdict(row)
        rows.append(row)
        mark = "ok  " if row["verdict"] is None else "FAIL"
        print(
            f"{mark} {name:60} {row['outcome'][:80]}  ({row['wall']:.1f} s, "
            f"{mib(row['peak_kb'])} MiB)",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    md = table(rows)
    head = (
        f"tensorwire {tw.__version__}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}; "
        f"timeout {args.timeout:g} s. Peak RSS: VmHWM after the payload was built "
        "(* = the child died: wait4's ru_maxrss and the whole child's wall time, payload "
        "building and imports included); +RSS: beyond the RSS just before the attack.\n\n"
    )
    print("\n" + md)
    if args.out:
        Path(args.out).write_text(head + md + "\n")
    failed = [r for r in rows if r["verdict"] is not None]
    for r in failed:
        print(f"FAILED {r['name']}: {r['verdict']}")
    if args.check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
