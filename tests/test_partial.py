"""Partial aggregates: ``Aggregator.partial()`` / ``Aggregator.merge()`` against one
aggregator over all the updates (bit for bit in float64 where the sums are exact, within
docs/federated.md's bound in float32), refusals that change nothing, hostile partials."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import tensorwire as tw
from tensorwire import fl

CODECS = ["raw", "shuffle+zstd", "delta+topk:0.01+f16+zstd", "int8"]
WEIGHTS = [None, "samples"]
U32 = 2.0**-24
GRID = 2.0**-10  # values on this grid: float64 adds them exactly (see `grid_model`)


def grid_model(rng: np.random.Generator, scale: float = 4.0) -> dict[str, np.ndarray]:
    """A model whose values are multiples of 2^-10 below `scale`: float32 holds them
    exactly, and so do the float64 sums of a few dozen of them times integer weights
    (26 significant bits at most), whatever the order of the additions."""

    def t(*shape: int) -> np.ndarray:
        return (np.round(rng.uniform(-scale, scale, shape) / GRID) * GRID).astype(np.float32)

    return {"enc/w": t(16, 12), "enc/b": t(12), "head": t(3, 5, 2), "scalar": t()}


def randn_model(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "enc/w": (scale * rng.standard_normal((16, 12))).astype(np.float32),
        "enc/b": (scale * rng.standard_normal(12)).astype(np.float32),
        "head": (scale * rng.standard_normal((3, 5, 2))).astype(np.float32),
        "scalar": np.float32(scale * rng.standard_normal()).reshape(()),
    }


def round_of(codec: str, make=grid_model, n: int = 8, seed: int = 0, **kw):
    """A global model and `n` client updates made with `codec` (round 1, samples 1..n x 37)."""
    rng = np.random.default_rng(seed)
    base = make(rng)
    updates = []
    for i in range(n):
        local = (
            {k: v + make(rng, 2.0)[k] for k, v in base.items()}
            if make is grid_model
            else {k: v + 0.1 * make(rng)[k] for k, v in base.items()}
        )
        updates.append(
            tw.encode_update(base, local, codec=codec, round=1, client_id=f"c{i}",
                             num_samples=37 * (i + 1), **kw)
        )  # fmt: skip
    return base, updates


def groups(updates: list[bytes], n: int) -> list[list[bytes]]:
    """`updates` cut into `n` contiguous groups (fixed sizes, the first ones larger)."""
    cuts = np.linspace(0, len(updates), n + 1).round().astype(int)
    return [updates[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


def edge(base, updates, weights, **kw) -> tw.Aggregator:
    agg = tw.Aggregator(base=base, round=1, **kw)
    for u in updates:
        assert agg.add(u, weights)
    return agg


def merged(base, parts: list[bytes], **kw) -> tw.Aggregator:
    top = tw.Aggregator(base=base, round=1, **kw)
    for p in parts:
        assert top.merge(p)
    return top


def assert_identical(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert got[k].tobytes() == want[k].tobytes(), k


@pytest.mark.parametrize("weights", WEIGHTS, ids=["uniform", "samples"])
@pytest.mark.parametrize("codec", CODECS)
def test_float64_merges_are_bit_identical_to_one_aggregator(codec, weights):
    base, updates = round_of(codec)
    one = edge(base, updates, weights, accumulate="float64")
    want = one.result()
    assert_identical(tw.aggregate(updates, weights, base=base, round=1, accumulate="float64"), want)
    for n in range(1, 5):
        parts = [edge(base, g, weights, accumulate="float64").partial() for g in groups(updates, n)]
        top = merged(base, parts, accumulate="float64")
        assert (top.count, top.total_weight) == (one.count, one.total_weight)
        assert [m[1] for m in top.merged] == [len(g) for g in groups(updates, n)]
        assert_identical(top.result(), want)
        # The sums themselves: the top's partial is the one aggregator's, bit for bit.
        assert top.partial() == one.partial(), n


def mean_magnitudes(base, updates, weights, codec) -> dict[str, np.ndarray]:
    """m of docs/federated.md's bound on |merged - single| in float32, 2.01 u (n m + |r|):
    the weighted mean of the contributions' magnitudes, element by element."""
    w = np.array(
        [1.0 if weights is None else fl.update_info(u).samples for u in updates], np.float64
    )
    mags = {k: np.zeros(np.shape(v), np.float64) for k, v in base.items()}
    for wi, u in zip(w, updates):
        if "delta" in codec:
            d = {k: tw.decode(u, base=base)[k].astype(np.float64) - base[k] for k in base}
        else:
            d = {k: v.astype(np.float64) for k, v in tw.decode(u).items()}
        for k in mags:
            mags[k] += wi * np.abs(d[k])
    return {k: m / w.sum() for k, m in mags.items()}


@pytest.mark.parametrize("weights", WEIGHTS, ids=["uniform", "samples"])
@pytest.mark.parametrize("codec", CODECS)
def test_float32_merges_are_within_the_documented_bound(codec, weights):
    base, updates = round_of(codec, make=randn_model, seed=3)
    one = edge(base, updates, weights)
    want = one.result()
    m = mean_magnitudes(base, updates, weights, codec)
    n = len(updates)
    exact = tw.aggregate(updates, weights, base=base, accumulate="float64")
    for parts in range(1, 5):
        top = merged(base, [edge(base, g, weights).partial() for g in groups(updates, parts)])
        got = top.result()
        for k in want:
            r = np.maximum(np.abs(got[k]), np.abs(want[k])).astype(np.float64)
            bound = 2.01 * U32 * (n * m[k] + r)
            diff = np.abs(got[k].astype(np.float64) - want[k])
            assert np.all(diff <= bound), (k, parts, float((diff - bound).max()))
            # Each is that close to the float64 mean, too.
            assert np.all(np.abs(got[k] - exact[k].astype(np.float64)) <= bound), (k, parts)


def test_a_fixed_merge_order_is_deterministic_and_exact_sums_any_order():
    base, updates = round_of("raw")
    parts = [edge(base, g, "samples", accumulate="float64").partial() for g in groups(updates, 4)]
    first = merged(base, parts, accumulate="float64").partial()
    assert merged(base, parts, accumulate="float64").partial() == first
    # Exact sums (values on a grid, integer weights): every order gives the same bits.
    assert merged(base, parts[::-1], accumulate="float64").partial() == first
    # In float32 the same partials in the same order give the same bits, too.
    parts32 = [edge(base, g, "samples").partial() for g in groups(updates, 3)]
    assert merged(base, parts32).partial() == merged(base, parts32).partial()


def test_merging_into_an_aggregator_without_tensors_and_partials_of_nothing():
    rng = np.random.default_rng(5)
    models = [grid_model(rng) for _ in range(5)]
    payloads = [tw.encode(m, codec="zstd") for m in models]
    want = tw.aggregate(payloads, [1, 2, 3, 4, 5], accumulate="float64")
    a, b = tw.Aggregator(accumulate="float64"), tw.Aggregator(accumulate="float64")
    for i, p in enumerate(payloads):
        (a if i < 2 else b).add(p, i + 1)
    top = tw.Aggregator(accumulate="float64")
    with pytest.raises(tw.InputError, match="no tensors"):
        top.partial()
    assert top.merge(a.partial()) and top.merge(b.partial())
    assert_identical(top.result(), want)
    # An aggregator with a base and no update: a partial of zero sums, merged as nothing.
    base = models[0]
    empty = tw.Aggregator(base=base, round=1)
    p = empty.partial()
    record = tw.open(p).metadata["tensorwire.partial"]
    assert (record["count"], record["total_weight"], record["kind"]) == (0, 0.0, None)
    top = tw.Aggregator(base=base, round=1)
    assert top.merge(p) and top.count == 0 and top.merged == [(0, 0, 0.0)]
    with pytest.raises(tw.InputError, match="nothing to average"):
        top.result()
    # An empty aggregator of a round with a base cannot take partials made against it.
    seen = []
    assert not tw.Aggregator(round=1, on_mismatch=lambda i, why: seen.append(why)).merge(p)
    assert "no base" in seen[0]


def test_nested_structures_travel_with_the_partial():
    rng = np.random.default_rng(2)
    layers = [[grid_model(rng)["enc/w"], grid_model(rng)["enc/b"]] for _ in range(4)]
    edges = [tw.Aggregator(accumulate="float64") for _ in range(2)]
    for i, layer in enumerate(layers):
        edges[i % 2].add(layer)
    top = tw.Aggregator(accumulate="float64")
    for e in edges:
        assert top.merge(e.partial(codec="shuffle+zstd"))
    got = top.result()
    assert isinstance(got, list) and len(got) == 2
    want = tw.aggregate([layers[0], layers[2], layers[1], layers[3]], accumulate="float64")
    for g, w in zip(got, want):
        assert g.tobytes() == w.tobytes()


def test_refused_partials_change_nothing():
    base, updates = round_of("shuffle+zstd")
    a = edge(base, updates[:4], "samples")
    b = edge(base, updates[3:6], "samples")  # update 3 is in both
    top = merged(base, [a.partial()])
    before = top.partial()
    other_base = {k: v + 1 for k, v in base.items()}
    template = dict(base, head=np.zeros((3, 5, 3), np.float32))
    cases = {
        "already counted": b.partial(),
        "of round 2, this is round 1": tw.Aggregator(base=base, round=2).partial(),
        "base": edge(other_base, [], None).partial(),
        "tensor 'head'": tw.Aggregator(template=template, round=1).partial(),
        "another precision": tw.Aggregator(base=base, round=1, accumulate="float64").partial(),
        "clip_norm=1.0": tw.Aggregator(base=base, round=1, clip_norm=1.0).partial(),
        "client update": updates[7],
        "not a partial": tw.encode(base),
    }
    for why, p in cases.items():
        with pytest.raises(fl.MismatchError, match=r"^partial aggregate \d+ does not fit") as e:
            top.merge(p)
        assert why.replace("'", '"') in e.value.reason, (why, e.value.reason)
        assert top.partial() == before, why
    # "skip" warns, a callable is called; neither raises.
    skip = merged(base, [a.partial()], on_mismatch="skip")
    with pytest.warns(fl.MismatchWarning, match="already counted"):
        assert not skip.merge(b.partial())
    calls = []
    call = merged(base, [a.partial()], on_mismatch=lambda i, why: calls.append((i, why)))
    assert not call.merge(b.partial()) and calls[0][0] == 1 and "already counted" in calls[0][1]
    assert skip.partial() == call.partial() == before
    assert [i for i, _ in call.skipped] == [1]
    # A partial is not an update either.
    agg = tw.Aggregator(base=base, round=1, on_mismatch="skip")
    with pytest.warns(fl.MismatchWarning, match="partial aggregate"):
        assert not agg.add(a.partial())
    with pytest.raises(fl.MismatchError, match="merge it with Aggregator.merge"):
        tw.aggregate([a.partial()], base=base)


def test_corrupted_partials_are_refused_and_change_nothing():
    base, updates = round_of("raw")
    top = merged(base, [edge(base, updates[:2], None).partial()])
    before = top.partial()
    good = edge(base, updates[2:5], None).partial()
    rng = np.random.default_rng(9)
    positions = sorted({*rng.integers(0, len(good), 300).tolist(), *range(0, 64)})
    outcomes = {"raised": 0, "refused": 0}
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 1 << int(rng.integers(8))
        try:
            merged_ok = top.merge(bytes(bad))
        except (tw.TensorwireError, fl.MismatchError):
            outcomes["raised"] += 1
        else:
            assert not merged_ok, pos
            outcomes["refused"] += 1
        assert top.partial() == before, pos
    assert outcomes["raised"] > 0
    assert top.merge(good) and top.count == 5


def test_signed_partials_and_the_round_admission_across_servers():
    clients = [tw.generate_signing_key() for _ in range(4)]
    enrolled = [tw.public_key(sk) for sk in clients]
    servers = [tw.generate_signing_key() for _ in range(2)]
    base = grid_model(np.random.default_rng(1))

    def update(i: int) -> bytes:
        local = {k: v + (i + 1) * GRID for k, v in base.items()}
        return tw.encode_update(base, local, round=1, signing_key=clients[i])

    ups = [update(i) for i in range(4)]
    parts = []
    for s, mine in zip(servers, [ups[:2], ups[2:]]):
        agg = tw.Aggregator(base=base, round=1, trusted_keys=enrolled)
        for u in mine:
            assert agg.add(u)
        parts.append(agg.partial(signing_key=s))
    seen: set[bytes] = set()
    top = tw.Aggregator(base=base, round=1, trusted_keys=enrolled, seen_nonces=seen)
    for p in parts:
        assert top.merge(p, trusted_keys=[tw.public_key(s) for s in servers])
    assert len(seen) == 4 and top.count == 4
    one = tw.aggregate(ups, base=base, trusted_keys=enrolled)
    np.testing.assert_allclose(top.result()["enc/w"], one["enc/w"], rtol=0, atol=1e-6)
    # A partial signed by another server, or not signed, is not accepted from servers.
    stranger = tw.Aggregator(base=base, round=1)
    with pytest.raises(tw.AuthenticationError):
        tw.Aggregator(base=base, round=1).merge(
            stranger.partial(), trusted_keys=[tw.public_key(servers[0])]
        )
    # Client 0 sends a second update to another server: the top refuses the double vote.
    again = tw.Aggregator(base=base, round=1, trusted_keys=enrolled)
    assert again.add(tw.encode_update(base, base, round=1, signing_key=clients[0]))
    top2 = tw.Aggregator(base=base, round=1, trusted_keys=enrolled)
    assert top2.merge(parts[0])
    with pytest.raises(fl.MismatchError, match="already sent an update"):
        top2.merge(again.partial())
    # Updates replayed into a later round: their nonces are in `seen`.
    with pytest.raises(fl.MismatchError, match="replay"):
        tw.Aggregator(base=base, round=1, seen_nonces=seen).merge(parts[1])
    # A round that takes only signed updates refuses a partial of unsigned ones.
    plain = edge(base, [tw.encode_update(base, base, round=1)], None)
    with pytest.raises(fl.MismatchError, match="0 of them signed"):
        tw.Aggregator(base=base, round=1, trusted_keys=enrolled).merge(plain.partial())


HOSTILE = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # before anything loads
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from local_process import peak_mib
    import forge
    import tensorwire as tw
    from tensorwire import fl

    base = {"w": np.ones(1000, np.float32)}
    good = tw.Aggregator(template=base)
    good.add(base)
    record = tw.open(good.partial()).metadata["tensorwire.partial"]
    ids = [f"tensorwire.partial/{n}" for n in ("content_ids", "signers", "nonces")]

    def partial(sums, content_ids, **fields):
        meta = {"tensorwire.partial": dict(record, **fields)}
        return forge.payload([sums, content_ids,
                              forge.T(ids[1], "uint8", [0, 32], b""),
                              forge.T(ids[2], "uint8", [0, 16], b"")], metadata=meta)

    w = forge.T("w", "float32", [1000], np.zeros(1000, np.float32).tobytes())
    n = 1 << 30  # elements: 4 GiB of float32, declared in a few KiB of zstd
    huge = forge.T("w", "float32", [n], forge.twc1([forge.zstd_rle(0, 1 << 22)] * (n >> 20),
                   block_scalars=1 << 20), codec="zstd")
    million = forge.T(ids[0], "uint8", [10**6, 32], b"")
    million_coded = forge.T(ids[0], "uint8", [10**6, 32], forge.dense(bytes(32 * 10**6), 1),
                            codec="zstd")
    one_id = forge.T(ids[0], "uint8", [1, 32], bytes(32))
    attacks = {
        "a million ids in no bytes": partial(w, million, count=10**6),
        "a million ids coded": partial(w, million_coded, count=10**6),
        "4 GiB of sums into an empty aggregator": partial(huge, one_id),
        "4 GiB of sums into a round": partial(huge, one_id),
        "ids beyond the count": partial(w, forge.T(ids[0], "uint8", [2, 32], bytes(range(64))),
                                        count=1),
        "a count of 2^60": partial(w, one_id, count=1 << 60),
    }
    refused = 0
    for what, blob in attacks.items():
        empty = "empty" in what
        top = tw.Aggregator() if empty else tw.Aggregator(template=base)
        if not empty:
            top.add({"w": np.full(1000, 2.0, np.float32)})
        before = None if empty else top.partial()
        try:
            assert not top.merge(blob), what
        except (tw.TensorwireError, fl.MismatchError) as e:
            print(what, "->", str(e).splitlines()[0])
        refused += 1
        if empty:
            try:
                top.partial()
                raise AssertionError("the refused partial gave it tensors")
            except tw.InputError:
                pass
        else:
            assert top.partial() == before, what
    peak = peak_mib()
    assert peak < 1024, peak
    print(f"ok {refused} hostile partials refused, peak {peak} MiB")
    """
)


def test_hostile_partials_are_refused_under_a_memory_limit() -> None:
    tests = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", HOSTILE, tests], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("ok 6 "), done.stdout
    why = dict(line.split(" -> ", 1) for line in lines[:-1])
    assert "does not match shape" in why["a million ids in no bytes"]
    assert "not stored raw" in why["a million ids coded"]
    assert "max_decoded_bytes" in why["4 GiB of sums into an empty aggregator"]
    assert "the round expects float32[1000]" in why["4 GiB of sums into a round"]
    assert "2 content ids for 1 updates" in why["ids beyond the count"]
    assert "above 2^53" in why["a count of 2^60"]


def test_the_record_is_what_format_md_says() -> None:
    base, updates = round_of("raw", n=3)
    agg = edge(base, updates, "samples")
    blob = agg.partial()
    with tw.open(blob) as r:
        names = list(r.keys())
        record = r.metadata["tensorwire.partial"]
        assert names[:4] == list(base) and names[4:] == [
            "tensorwire.partial/content_ids",
            "tensorwire.partial/signers",
            "tensorwire.partial/nonces",
        ]
        assert r.info("enc/w").dtype == "float32" and r["tensorwire.partial/content_ids"].shape == (
            3,
            32,
        )
        ids = sorted(bytes.fromhex(tw.open(u).content_id) for u in updates)
        assert [bytes(row) for row in r["tensorwire.partial/content_ids"]] == ids
    assert record["version"] == 1 and record["round"] == 1 and record["count"] == 3
    assert record["total_weight"] == 37 * 6 and record["kind"] == "difference"
    assert record["dtypes"] == ["float32"] * 4 and len(record["bounds"]) == 4
    json.dumps(record)  # plain JSON
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tw.Aggregator(base=base, round=1).merge(blob)


def test_numbers_travel_bit_for_bit():
    """Fractional weights and options read back exactly (the merge compares them)."""
    base, updates = round_of("raw", n=3)
    clip = 0.1 + 0.2  # 0.30000000000000004
    a = tw.Aggregator(base=base, round=1, clip_norm=clip)
    for u, w in zip(updates, [0.1, 0.2, 1 / 3]):
        assert a.add(u, w)
    top = tw.Aggregator(base=base, round=1, clip_norm=clip)
    assert top.merge(a.partial())
    assert top.total_weight == a.total_weight and top.partial() == a.partial()
    with pytest.raises(fl.MismatchError, match="clip_norm=0.30000000000000004, this aggregator"):
        tw.Aggregator(base=base, round=1, clip_norm=0.3).merge(a.partial())


def test_partial_info_names_what_a_partial_counts() -> None:
    base, updates = round_of("raw", n=4)
    agg = edge(base, updates[:3], "samples")
    info = fl.partial_info(agg.partial())
    assert (info.round, info.count) == (1, 3)
    assert info.total_weight == 37 * (1 + 2 + 3)
    assert info.base == fl.update_info(updates[0]).base  # the global model the round is on
    assert sorted(info.content_ids) == sorted(tw.open(u).content_id for u in updates[:3])
    with pytest.raises(tw.FormatError, match="not a partial aggregate"):
        fl.partial_info(updates[3])
    key = bytes(range(32))
    keyed = agg.partial(key=key)
    assert fl.partial_info(keyed, key=key).content_ids == info.content_ids
    with pytest.raises(tw.AuthenticationError):
        fl.partial_info(keyed)
