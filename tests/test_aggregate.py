"""tw.aggregate / tw.Aggregator / tw.encode_update / fl.ErrorFeedback against numpy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import tensorwire as tw
from tensorwire import fl

# Every codec spec we know of; those this build does not have yet are skipped, so the
# test grows as codecs land. Lossy ones are checked against numpy over the decoded values.
CODECS = [
    "raw",
    "zstd",
    "zstd:-3",
    "lz4",
    "shuffle+zstd",
    "shuffle+lz4",
    "f16",
    "bf16+zstd",
    "int8",
    "topk:0.1",
    "auto",
]
DELTA_CODECS = ["delta+zstd", "xor+zstd", "delta+topk:0.1+f16+zstd"]


def model(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {
        "enc/w": (scale * rng.standard_normal((16, 8))).astype(np.float32),
        "enc/b": (scale * rng.standard_normal(8)).astype(np.float32),
        "head": (scale * rng.standard_normal((3, 5, 2))).astype(np.float32),
        "scalar": np.float32(scale * rng.standard_normal()).reshape(()),
        "empty": np.zeros((0, 4), np.float32),
    }


def encode_or_skip(tensors, codec, **kw):
    try:
        return tw.encode(tensors, codec=codec, **kw)
    except tw.CodecError as e:
        if "unknown codec stage" in str(e):
            pytest.skip(f"codec {codec!r} not in this build")
        raise


def reference(models, weights):
    w = np.asarray(weights, np.float64)
    return {
        k: (sum(wi * np.asarray(m[k], np.float64) for wi, m in zip(w, models)) / w.sum())
        for k in models[0]
    }


def assert_close(got, want, tol=1e-5):
    assert set(got) == set(want)
    for k in want:
        assert got[k].shape == want[k].shape, k
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


@pytest.mark.parametrize("codec", CODECS)
def test_equals_numpy_reference_for_every_codec(codec):
    rng = np.random.default_rng(1)
    updates = [model(rng) for _ in range(5)]
    payloads = [encode_or_skip(u, codec) for u in updates]
    weights = [3, 1, 4, 1, 5]
    decoded = [tw.decode(p, copy=True) for p in payloads]
    got = tw.aggregate(payloads, weights)
    assert_close(got, reference(decoded, weights))
    assert all(got[k].dtype == np.float32 for k in got)
    # The streaming form agrees with the batch form.
    agg = tw.Aggregator()
    for p, w in zip(payloads, weights):
        assert agg.add(p, w)
    assert_close(agg.result(), reference(decoded, weights))


@pytest.mark.parametrize("codec", DELTA_CODECS)
def test_delta_payloads_decode_against_the_base(codec):
    rng = np.random.default_rng(2)
    base = model(rng)
    locals_ = [
        {k: v + 0.01 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        for _ in range(3)
    ]
    payloads = [encode_or_skip(m, codec, base=base) for m in locals_]
    decoded = [tw.decode(p, base=base, copy=True) for p in payloads]
    got = tw.aggregate(payloads, [1, 2, 3], base=base)
    assert_close(got, reference(decoded, [1, 2, 3]))
    other = model(rng)
    with pytest.raises(fl.MismatchError, match="delta-encoded against base"):
        tw.aggregate(payloads, base=other)
    with pytest.raises(fl.MismatchError, match="round has no base"):
        tw.aggregate(payloads)


def test_mixed_inputs_structures_and_dtypes():
    rng = np.random.default_rng(3)
    import ml_dtypes

    def nested(s):
        return {
            "layers": [
                {"w": (s * rng.standard_normal((4, 3))).astype(np.float16)},
                {"w": (s * rng.standard_normal((4, 3))).astype(ml_dtypes.bfloat16)},
            ],
            "f64": s * rng.standard_normal(7),
            "steps": np.array([10, 11, 12], np.int64) * int(s),
            "u8": np.array([0, 255, 7], np.uint8),
        }

    ms = [nested(s) for s in (1, 2, 3)]
    inputs = [ms[0], tw.encode(ms[1], codec="zstd"), tw.encode(ms[2])]
    got = tw.aggregate(inputs, [1, 1, 2])
    assert isinstance(got["layers"], list) and got["layers"][1]["w"].dtype == ml_dtypes.bfloat16
    w = np.array([1, 1, 2], np.float64)

    def avg(f):
        return sum(wi * np.asarray(f(m), np.float64) for wi, m in zip(w, ms)) / w.sum()

    np.testing.assert_allclose(
        got["layers"][0]["w"].astype(np.float64), avg(lambda m: m["layers"][0]["w"]), rtol=1e-3
    )
    np.testing.assert_allclose(
        got["layers"][1]["w"].astype(np.float64), avg(lambda m: m["layers"][1]["w"]), rtol=1e-2
    )
    np.testing.assert_allclose(got["f64"], avg(lambda m: m["f64"]), rtol=1e-12)
    assert got["f64"].dtype == np.float64
    # Integers: averaged in float64, rounded half to even.
    np.testing.assert_array_equal(got["steps"], np.rint(avg(lambda m: m["steps"])))
    np.testing.assert_array_equal(got["u8"], [0, 255, 7])


def test_updates_from_encode_update_rebuild_the_global_model():
    rng = np.random.default_rng(4)
    old = model(rng)
    news = [
        {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in old.items()}
        for _ in range(4)
    ]
    samples = [10, 20, 30, 40]
    ups = [
        tw.encode_update(old, n, codec="shuffle+zstd", round=7, client_id=f"c{i}", num_samples=s)
        for i, (n, s) in enumerate(zip(news, samples))
    ]
    info = fl.update_info(ups[2])
    assert info.kind == "difference" and info.round == 7 and info.client == "c2"
    assert info.samples == 30
    # A difference payload holds new - old.
    np.testing.assert_array_equal(tw.decode(ups[0])["enc/w"], news[0]["enc/w"] - old["enc/w"])
    want = reference(news, samples)
    assert_close(tw.aggregate(ups, "samples", base=old, round=7), want)
    # Mixed: a difference, a full model as payload and a full model as arrays.
    mixed = [ups[0], tw.encode(news[1], codec="lz4"), news[2], ups[3]]
    assert_close(tw.aggregate(mixed, samples, base=old), want)
    # Without a base, differences average as differences.
    diffs = [{k: news[i][k] - old[k] for k in old} for i in range(4)]
    assert_close(tw.aggregate(ups, samples), reference(diffs, samples))
    # ...and cannot be mixed with models.
    with pytest.raises(fl.MismatchError, match="cannot be averaged together"):
        tw.aggregate([ups[0], news[1]])
    # Weights "samples" need the record: an update without one is refused.
    with pytest.raises(fl.MismatchError, match="records no sample count"):
        tw.aggregate([news[0], ups[1]], "samples", base=old)


def test_clipping_matches_numpy():
    rng = np.random.default_rng(5)
    old = model(rng)
    news = [
        {k: v + s * rng.standard_normal(v.shape).astype(np.float32) for k, v in old.items()}
        for s in (0.01, 1.0, 5.0)
    ]
    clip = 2.0
    diffs = []
    for n in news:
        d = {k: np.asarray(n[k], np.float64) - old[k] for k in old}
        norm = np.sqrt(sum(float((v**2).sum()) for v in d.values()))
        s = min(1.0, clip / norm)
        diffs.append({k: old[k] + s * v for k, v in d.items()})
    payloads = [tw.encode(n, codec="zstd") for n in news]
    got = tw.aggregate(payloads, [1, 2, 3], base=old, clip_norm=clip)
    assert_close(got, reference(diffs, [1, 2, 3]))
    agg = tw.Aggregator(base=old, clip_norm=clip)
    for p, w in zip(payloads, [1, 2, 3]):
        agg.add(p, w)
    assert_close(agg.result(), reference(diffs, [1, 2, 3]))
    scales = [a[4] for a in agg.added]
    assert scales[0] == 1.0 and scales[2] < scales[1] < 1.0
    with pytest.raises(tw.InputError, match="clip norm"):
        tw.aggregate(payloads, clip_norm=-1.0)


def test_mismatches_are_reported_never_averaged():
    rng = np.random.default_rng(6)
    good = [model(rng) for _ in range(3)]
    bad_shape = dict(good[0], head=np.zeros((5, 3, 2), np.float32))
    bad_dtype = dict(good[0], **{"enc/b": good[0]["enc/b"].astype(np.float64)})
    missing = {k: v for k, v in good[0].items() if k != "head"}
    extra = dict(good[0], more=np.zeros(2, np.float32))
    want = reference(good, [1, 1, 1])
    for bad, msg in [
        (bad_shape, r'tensor "head" is float32\[5, 3, 2\], the round expects float32\[3, 5, 2\]'),
        (bad_dtype, r'tensor "enc/b" is float64\[8\]'),
        (missing, 'missing tensor "head"'),
        (extra, 'unexpected tensor "more"'),
    ]:
        updates = [tw.encode(good[0]), tw.encode(bad, codec="zstd"), good[1], good[2]]
        with pytest.raises(fl.MismatchError, match=msg) as e:
            tw.aggregate(updates)
        assert e.value.index == 1
        with pytest.warns(fl.MismatchWarning, match="update 1 skipped"):
            got = tw.aggregate(updates, on_mismatch="skip")
        assert_close(got, want)
        seen: list[tuple[int, str]] = []
        got = tw.aggregate(updates, on_mismatch=lambda i, r, seen=seen: seen.append((i, r)))
        assert [i for i, _ in seen] == [1]
        assert_close(got, want)
        agg = tw.Aggregator(template=good[0], on_mismatch="skip")
        with pytest.warns(fl.MismatchWarning):
            added = [agg.add(u) for u in updates]
        assert added == [True, False, True, True] and agg.skipped[0][0] == 1
        assert_close(agg.result(), want)
    # Another round's update, and a difference against another base.
    old = good[0]
    up = tw.encode_update(old, good[1], round=3)
    with pytest.raises(fl.MismatchError, match="from round 3, this is round 4"):
        tw.aggregate([up], base=old, round=4)
    with pytest.raises(fl.MismatchError, match="difference against base"):
        tw.aggregate([up], base=good[2])
    with pytest.raises(fl.MismatchError):
        tw.Aggregator(base=good[2]).add(up)
    # All skipped: nothing to average.
    with pytest.raises(tw.InputError, match="nothing to average"), warnings.catch_warnings():
        warnings.simplefilter("ignore", fl.MismatchWarning)
        tw.aggregate([up], base=good[2], on_mismatch="skip")


def test_bad_payloads_raise_tensorwire_errors():
    rng = np.random.default_rng(7)
    ms = [model(rng) for _ in range(2)]
    good = tw.encode(ms[0], codec="zstd")
    raw = bytearray(tw.encode(ms[1]))
    start = tw._core.Payload(bytes(raw)).entries()[0][4]
    raw[start + 5] ^= 0x40  # a tensor byte: checksum mismatch
    with pytest.raises(tw.IntegrityError, match=r"update 1: tensor .* checksum mismatch"):
        tw.aggregate([good, bytes(raw)])
    padded = bytearray(tw.encode(ms[1]))
    padded[-1] ^= 0x01  # the padding before the last (empty) tensor
    with pytest.raises(tw.IntegrityError, match="update 1: padding"):
        tw.aggregate([good, bytes(padded)])
    # verify=False skips the checksums (the header is still validated).
    tw.aggregate([good, bytes(raw)], verify=False)
    with pytest.raises(tw.IntegrityError, match="update 1: payload truncated"):
        tw.aggregate([good, good[:-10]])
    with pytest.raises(tw.FormatError, match="update 0"):
        tw.aggregate([b"not a payload at all" * 4, good])
    with pytest.raises(tw.InputError):
        tw.aggregate([good, 42])
    # A streaming aggregator refuses the bad update and keeps its state.
    agg = tw.Aggregator()
    agg.add(good)
    with pytest.raises(tw.IntegrityError):
        agg.add(bytes(raw))
    assert agg.count == 1
    assert_close(agg.result(), tw.decode(good))


def test_bad_arguments():
    rng = np.random.default_rng(8)
    m = model(rng)
    p = tw.encode(m)
    with pytest.raises(tw.InputError, match="weight -1"):
        tw.aggregate([p, p], [1, -1])
    with pytest.raises(tw.InputError, match="weight NaN"):
        tw.aggregate([p], [float("nan")])
    with pytest.raises(tw.InputError, match="2 weights for 1 updates"):
        tw.aggregate([p], [1, 2])
    with pytest.raises(tw.InputError, match="sum to zero"):
        tw.aggregate([p, tw.encode(m, metadata=1)], [0, 0])
    with pytest.raises(tw.InputError, match="no updates"):
        tw.aggregate([])
    with pytest.raises(tw.InputError, match="on_mismatch"):
        tw.aggregate([p], on_mismatch="ignore")
    with pytest.raises(tw.InputError, match="accumulate"):
        tw.aggregate([p], accumulate="float16")
    with pytest.raises(tw.InputError, match="cannot be averaged"):
        tw.aggregate([{"mask": np.ones(3, bool)}])
    with pytest.raises(tw.InputError, match="sequence"):
        tw.aggregate(p)
    with pytest.raises(tw.InputError, match="nothing to average"):
        tw.Aggregator().result()


def test_out_and_float64_accumulation():
    rng = np.random.default_rng(9)
    ms = [model(rng) for _ in range(3)]
    out = {k: np.empty_like(v) for k, v in ms[0].items()}
    got = tw.aggregate([tw.encode(m) for m in ms], out=out, accumulate="float64")
    assert got is out
    assert_close(out, reference(ms, [1, 1, 1]))
    with pytest.raises(tw.InputError, match="out"):
        tw.aggregate(ms, out={k: v.astype(np.float64) for k, v in ms[0].items()})


def test_a_refused_round_leaves_out_as_it_was():
    rng = np.random.default_rng(11)
    good = model(rng)
    bad = {k: v.copy() for k, v in good.items()}
    next(iter(bad.values())).flat[0] = np.nan
    out = {k: np.full_like(v, 7.0) for k, v in good.items()}
    with pytest.raises(fl.MismatchError, match="update 1"):
        tw.aggregate([tw.encode(good), tw.encode(bad)], out=out)
    assert all((v == 7.0).all() for v in out.values())


def test_encode_update_with_error_feedback():
    rng = np.random.default_rng(10)
    old = model(rng)
    ef = fl.ErrorFeedback()
    # Lossless codec: nothing is dropped, the residual stays zero.
    new = {k: v + 1 for k, v in old.items()}
    tw.encode_update(old, new, codec="zstd", error_feedback=ef)
    assert all(not r.any() for r in ef.residual.values())
    # A lossy codec: the residual is intended - decoded, and is carried into next round.
    lossy = next((c for c in ("topk:0.1", "int8", "f16") if _available(c)), None)
    if lossy is None:
        pytest.skip("no lossy codec in this build yet")
    ef = fl.ErrorFeedback()
    sent_total = {k: np.zeros_like(v) for k, v in old.items()}
    intended_total = {k: np.zeros_like(v) for k, v in old.items()}
    for _ in range(3):
        new = {k: v + rng.standard_normal(v.shape).astype(np.float32) for k, v in old.items()}
        up = tw.encode_update(old, new, codec=lossy, error_feedback=ef)
        for k, v in tw.decode(up).items():
            sent_total[k] += v
            intended_total[k] += new[k] - old[k]
    # What was sent plus what is still carried equals everything intended.
    for k in old:
        np.testing.assert_allclose(sent_total[k] + ef.residual[k], intended_total[k], atol=1e-4)
    assert any(r.any() for r in ef.residual.values())


def _available(codec: str) -> bool:
    try:
        tw.encode({"x": np.ones(4, np.float32)}, codec=codec)
        return True
    except tw.CodecError:
        return False


def test_error_feedback_and_encode_update_refuse_bad_input():
    ef = fl.ErrorFeedback()
    ef.record("w", np.ones(3, np.float32), np.zeros(3, np.float32))
    np.testing.assert_array_equal(ef.apply("w", np.ones(3, np.float32)), [2, 2, 2])
    with pytest.raises(tw.InputError, match="residual carried"):
        ef.apply("w", np.ones(4, np.float32))
    ef.reset()
    assert ef.residual == {}
    old = {"w": np.zeros(3, np.float32)}
    with pytest.raises(tw.InputError, match="same tensors"):
        tw.encode_update(old, {"v": np.zeros(3, np.float32)})
    with pytest.raises(tw.InputError, match="old is float32"):
        tw.encode_update(old, {"w": np.zeros(4, np.float32)})
    with pytest.raises(tw.InputError, match="reserved"):
        tw.encode_update(old, old, metadata={"tensorwire.update": 1})
    p = tw.encode_update(old, old, metadata={"run": "a"})
    assert tw.open(p).metadata["run"] == "a"


MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorwire as tw

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    paths = json.loads(sys.argv[1])
    payloads = [open(p, "rb").read() for p in paths]
    # The kernel's high-water mark, reset now: ru_maxrss would also count what this
    # process inherited from its parent at fork (Linux carries it over exec).
    open("/proc/self/clear_refs", "w").write("5")
    before = status("VmRSS")
    out = tw.aggregate(payloads)
    peak = status("VmHWM")
    value = float(out["t0"][0])
    print(json.dumps({"before": before, "peak": peak, "value": value}))
    """
)


def test_memory_stays_near_one_model(tmp_path):
    """100 updates of a 100 MB model: peak RSS grows by about one model, not 100."""
    n_tensors, numel = 10, 2_500_000  # 10 x 10 MB of float32
    model_bytes = n_tensors * numel * 4
    a = np.empty(numel, np.float32)
    paths = []
    for i in range(100):
        a.fill(i % 4)  # constant tensors: small zstd payloads, a full model decoded
        p = tmp_path / f"u{i}.twr"
        # Distinct payloads (a round refuses the same payload twice).
        blob = tw.encode({f"t{k}": a for k in range(n_tensors)}, codec="zstd:1", metadata=i)
        p.write_bytes(blob)
        paths.append(str(p))
    r = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, json.dumps(paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    m = json.loads(r.stdout)
    assert m["value"] == pytest.approx(1.5)
    growth = (m["peak"] - m["before"]) / model_bytes
    # One model of output plus a tensor of scratch per thread; 100 decoded updates
    # would be 100x. Generous bound for allocator slack.
    assert growth < 1.6, m


# -- robust aggregators, refusals ---------------------------------------------------------


def nan_update(m):
    bad = {k: v.copy() for k, v in m.items()}
    bad["enc/w"].flat[3] = np.nan
    return tw.encode(bad)


def test_median_and_trimmed_mean_match_flowers_strategies():
    with warnings.catch_warnings():  # Flower's own imports warn about click
        warnings.simplefilter("ignore", DeprecationWarning)
        strategies = pytest.importorskip("flwr.server.strategy.aggregate")
    aggregate_median = strategies.aggregate_median
    aggregate_trimmed_avg = strategies.aggregate_trimmed_avg

    rng = np.random.default_rng(11)
    old = model(rng)
    news = [model(rng) for _ in range(7)]
    codecs = ["raw", "shuffle+zstd", "lz4", "floatzip", "zstd", "raw", "shuffle+lz4"]
    payloads = [tw.encode(n, codec=c) for n, c in zip(news, codecs)]
    names = list(old)
    arrays = [[n[k] for k in names] for n in news]
    for count in (7, 6):
        got = tw.aggregate(payloads[:count], method="median")
        want = aggregate_median([(a, 1) for a in arrays[:count]])
        for k, w in zip(names, want):
            np.testing.assert_allclose(got[k], w, rtol=1e-6, atol=1e-7)
        got = tw.aggregate(payloads[:count], method="trimmed_mean:0.2")
        want = aggregate_trimmed_avg([(a, 1) for a in arrays[:count]], 0.2)
        for k, w in zip(names, want):
            np.testing.assert_allclose(got[k], w, rtol=1e-6, atol=1e-7)
    # With a base: base + median of the differences, whatever the update form.
    ups = [tw.encode_update(old, n, codec="zstd") for n in news[:5]]
    got = tw.aggregate(ups, base=old, method="median")
    for k in names:
        np.testing.assert_allclose(got[k], np.median([n[k] for n in news[:5]], axis=0), atol=1e-6)
    # One poisoned update cannot move the median far; it moves the mean.
    poisoned = [*payloads[:6], tw.encode({k: v + 1e6 for k, v in news[6].items()})]
    assert np.abs(tw.aggregate(poisoned, method="median")["enc/w"]).max() < 10
    assert np.abs(tw.aggregate(poisoned)["enc/w"]).max() > 1e5
    with pytest.raises(tw.InputError, match="unweighted"):
        tw.aggregate(payloads, [1] * 7, method="median")
    with pytest.raises(tw.InputError, match="trimmed_mean"):
        tw.aggregate(payloads, method="trimmed_mean:0.5")
    with (
        pytest.raises(tw.InputError, match="nothing to aggregate"),
        pytest.warns(fl.MismatchWarning, match="NaN"),
    ):
        tw.aggregate([nan_update(news[0])], method="median", on_mismatch="skip")


def test_refused_updates_name_the_reason_and_change_nothing():
    rng = np.random.default_rng(12)
    old = model(rng)
    honest = [tw.encode_update(old, model(rng), codec="zstd", num_samples=10) for _ in range(3)]
    nan = {k: v.copy() for k, v in model(rng).items()}
    nan["enc/w"][1, 2] = np.nan
    bad = [
        (tw.encode_update(old, nan, codec="lz4"), "element [0-9]+ is NaN"),
        (honest[0], "same payload"),
        (tw.encode_update(old, {k: v + 100 for k, v in old.items()}), "exceeds max_norm"),
    ]
    agg = tw.Aggregator(base=old, max_norm=50.0, on_mismatch="skip")
    for h in honest:
        assert agg.add(h)
    before = agg.result()
    for payload, why in bad:
        with pytest.warns(fl.MismatchWarning, match=why):
            assert not agg.add(payload)
    after = agg.result()
    for k in old:
        assert np.array_equal(before[k].view(np.uint32), after[k].view(np.uint32))
    assert [w for _, w in agg.skipped] and agg.count == 3
    reasons = []
    tw.aggregate([*honest, *(p for p, _ in bad)], base=old, max_norm=50.0,
                 on_mismatch=lambda i, why: reasons.append((i, why)))  # fmt: skip
    assert [i for i, _ in reasons] == [3, 4, 5]
