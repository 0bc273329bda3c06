"""The main job: encode a model, send it through the chunker, reassemble, decode, verify.

Run with `make demo`. Builds a BERT-base-shaped float32 state dict (scaled down with
--scale for a quick look), then for each codec: encodes it, splits the payload into
1 MB broker-sized chunks, shuffles them (as a broker with several partitions would),
reassembles, decodes, checks the result against the original and prints a table.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

import tensorwire as tw

MAX_CHUNK = 1 << 20  # Kafka's and NATS's default message limit


def bert_base(scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    """A BERT-base-shaped state dict (199 float32 tensors, 438 MB at scale 1)."""
    rng = np.random.default_rng(seed)
    h, ff, vocab = 768, 3072, max(1, int(30522 * scale))
    layers = max(1, round(12 * scale))
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (vocab, h),
        "embeddings.position_embeddings.weight": (512, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value"):
            shapes[p + m + ".weight"] = (h, h)
            shapes[p + m + ".bias"] = (h,)
        shapes[p + "attention.output.dense.weight"] = (h, h)
        shapes[p + "attention.output.dense.bias"] = (h,)
        shapes[p + "attention.output.LayerNorm.weight"] = (h,)
        shapes[p + "attention.output.LayerNorm.bias"] = (h,)
        shapes[p + "intermediate.dense.weight"] = (ff, h)
        shapes[p + "intermediate.dense.bias"] = (ff,)
        shapes[p + "output.dense.weight"] = (h, ff)
        shapes[p + "output.dense.bias"] = (h,)
        shapes[p + "output.LayerNorm.weight"] = (h,)
        shapes[p + "output.LayerNorm.bias"] = (h,)
    shapes["pooler.dense.weight"] = (h, h)
    shapes["pooler.dense.bias"] = (h,)
    return {k: (rng.standard_normal(s, dtype=np.float32) * 0.02) for k, s in shapes.items()}


def check(original: dict, decoded: dict, lossless: bool) -> float:
    """Max abs error over all tensors (0.0 and bit-exact for lossless codecs)."""
    worst = 0.0
    for k, a in original.items():
        b = decoded[k]
        assert b.shape == a.shape and b.dtype == a.dtype, k
        if lossless:
            assert a.tobytes() == b.tobytes(), f"{k} changed"
        else:
            worst = max(worst, float(np.max(np.abs(a - b))) if a.size else 0.0)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.25, help="model size (1.0 = BERT-base)")
    args = ap.parse_args()
    model = bert_base(args.scale)
    raw_bytes = sum(a.nbytes for a in model.values())
    print(f"model: {len(model)} float32 tensors, {raw_bytes / 1e6:.1f} MB\n")
    rows = []
    codecs = [
        ("raw", True),
        ("shuffle+zstd:1", True),
        ("floatzip", True),
        ("f16+zstd:1", False),
        ("int8:channel+zstd:1", False),
    ]
    for codec, lossless in codecs:
        t0 = time.perf_counter()
        blob = tw.encode(model, codec=codec, metadata={"codec": codec})
        t1 = time.perf_counter()
        chunks = list(tw.chunk(blob, MAX_CHUNK))
        random.Random(0).shuffle(chunks)
        reassembler = tw.Reassembler()
        whole = [p for p in map(reassembler.add, chunks) if p is not None]
        t2 = time.perf_counter()
        assert len(whole) == 1 and whole[0] == blob
        decoded = tw.decode(whole[0], verify=True)
        t3 = time.perf_counter()
        err = check(model, decoded, lossless)
        rows.append((codec, len(blob) / raw_bytes, len(chunks), t1 - t0, t2 - t1, t3 - t2, err))
    head = ("codec", "size/raw", "chunks", "encode", "chunk+reasm", "decode+verify", "max err")
    print("{:<20} {:>9} {:>7} {:>11} {:>12} {:>14} {:>9}".format(*head))
    for c, ratio, n, te, tc, td, err in rows:
        gbs = raw_bytes / 1e9
        print(
            f"{c:<20} {ratio:>9.3f} {n:>7} {gbs / te:>7.2f}GB/s {gbs / tc:>8.2f}GB/s "
            f"{gbs / td:>10.2f}GB/s {err:>9.2g}"
        )
    print("\nall round trips verified (lossless: bit-exact; lossy: max abs error shown)")
    print("note: random N(0, 0.02) weights; real trained weights compress better (make bench)")


if __name__ == "__main__":
    main()
