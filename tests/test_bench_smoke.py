"""The benchmark harness's own checks: its baseline, its round-trip judge, its goals, its fits.

The harness decides whether a method passes and whether a goal is met, so the judges
themselves are tested here: the round-trip judge must reject a flipped bit, a wrong dtype,
an error beyond a lossy stage's bound, and accept what the stage really produces; each
goal must flip at its threshold. The end-to-end smoke run of every part is
``make bench-smoke``; the tests below run one part each at smoke sizes.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "benches"))

import aggregation
import bert
import codec_ratios
import goals
import measure
import methods
import peers
import record
import reuse
import scaling
import sharded
import workloads

import tensorwire as tw


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((3, 4), dtype=np.float32),
        "b": np.arange(5, dtype=np.int64),
        "c": np.array(1.5, dtype=np.float64),
    }


def test_seed_baseline_round_trips_and_rejects_corruption() -> None:
    t = _tensors()
    del t["c"]  # the seed cannot read back a 0-d array (np.prod(()) is a float); kept as is
    blob = peers.md5list_serialize(list(t.values()))
    back = peers.md5list_deserialize(blob)
    assert back is not None
    for x, y in zip(t.values(), back):
        assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
    bad = bytearray(blob)
    bad[10] ^= 1
    assert peers.md5list_deserialize(bytes(bad)) is None


@pytest.mark.parametrize("name", [p[0] for p in peers.PEERS])
def test_every_peer_round_trips_exactly(name: str) -> None:
    t = {"x": np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8), "y": np.ones(3, np.int32)}
    m = next(m for m in methods.all_methods("/nonexistent") if m.name == name)
    w = workloads.Workload("t", "t", t)
    blob = m.encode(w)
    assert methods.blob_size(blob) > 0
    methods.check_round_trip(m, w, m.decoders["decode"](blob, w))


def _float_tensors(kind: str) -> dict[str, np.ndarray]:
    """Trained-like float32 weights (a few exponents, 300 kB: several ZipNN chunks), an
    int64 buffer, a 0-d and an empty float tensor; cast as the real-weights kinds are."""
    import ml_dtypes

    rng = np.random.default_rng(4)
    t = {
        "w": (rng.standard_normal((300, 256)) * 0.05).astype(np.float32),
        "ids": np.arange(40, dtype=np.int64),
        "scale": np.array(0.5, dtype=np.float32),
        "none": np.zeros((0, 4), np.float32),
    }
    if kind == "float32":
        return t
    floats = {k: a.astype(ml_dtypes.bfloat16) if a.dtype.kind == "f" else a for k, a in t.items()}
    if kind == "bfloat16":
        return floats
    return {k: a.astype(np.float32) if a.dtype.kind != "i" else a for k, a in floats.items()}


@pytest.mark.parametrize("kind", ["float32", "bfloat16", "clean"])
@pytest.mark.parametrize("name", [c[0] for c in peers.COMPRESSORS])
def test_every_compressor_round_trips_and_leaves_its_input_alone(name: str, kind: str) -> None:
    t = _float_tensors(kind)
    before = {k: a.copy() for k, a in t.items()}
    m = next(m for m in methods.all_methods("/nonexistent") if m.name == name)
    assert m.group == "compressor"
    w = workloads.Workload("t", "t", t)
    blob = m.encode(w)
    for k, a in t.items():  # ZipNN reorders what it is given in place: a copy, not this
        assert a.tobytes() == before[k].tobytes(), k
    assert 0 < methods.blob_size(blob) < 0.95 * w.nbytes
    methods.check_round_trip(m, w, m.decoders["decode"](blob, w))
    bad = dict(t, w=t["w"].copy())
    bad["w"].reshape(-1).view(np.uint8)[5] ^= 1
    with pytest.raises(methods.RoundTripError):
        methods.check_round_trip(
            m, w, m.decoders["decode"](m.encode(workloads.Workload("t", "t", bad)), w)
        )


def test_real_kinds_are_derived_from_the_float32_model() -> None:
    t = _float_tensors("float32")
    model = workloads.Workload("real-minilm", "weights (x), 4 tensors", t)
    f32, bf16, clean = workloads.real_kinds(model)
    assert f32 is model and [w.name for w in (bf16, clean)] == list(workloads.REAL_KINDS[1:])
    assert bf16.tensors["w"].dtype.name == "bfloat16" and bf16.nbytes < model.nbytes
    assert clean.tensors["w"].dtype == np.float32 and clean.nbytes == model.nbytes
    assert not np.any(clean.tensors["w"].view(np.uint32) & 0xFFFF)  # low bytes zero
    assert np.array_equal(
        clean.tensors["w"].view(np.uint16)[:, 1::2], bf16.tensors["w"].view(np.uint16)
    )
    assert bf16.tensors["ids"] is t["ids"] and clean.tensors["ids"] is t["ids"]
    assert {"compressor", "lossless"} <= bf16.groups and "compressor" in workloads.smoke_stand_in(
        t, "x"
    ).groups


def test_float_codecs_apply_to_bfloat16_tensors() -> None:
    m = next(m for m in methods.all_methods("/nonexistent") if m.name == "tw floatzip")
    if methods.method_availability(m) is not None:
        pytest.skip("floatzip not in this build")
    t = _float_tensors("bfloat16")
    w = workloads.Workload("t", "t", t)
    blob = m.encode(w)
    assert len(blob) < 0.9 * w.nbytes  # compressed, not sent raw as a non-float tensor
    assert list(m.decoders) == ["decode", "decode verify=False"]
    for dec in m.decoders.values():
        methods.check_round_trip(m, w, dec(blob, w))


def _lossless_method() -> methods.Method:
    return next(m for m in methods.all_methods("/nonexistent") if m.name == "tw raw")


def test_judge_rejects_a_flipped_bit_and_a_wrong_dtype() -> None:
    t = _tensors()
    w = workloads.Workload("t", "t", t)
    m = _lossless_method()
    methods.check_round_trip(m, w, {k: v.copy() for k, v in t.items()})
    flipped = {k: v.copy() for k, v in t.items()}
    flipped["a"].view(np.uint32)[1, 2] ^= 1
    with pytest.raises(methods.RoundTripError, match="'a' is not bit-exact"):
        methods.check_round_trip(m, w, flipped)
    wrong = dict(t, b=t["b"].astype(np.int32))
    with pytest.raises(methods.RoundTripError, match="'b' came back int32"):
        methods.check_round_trip(m, w, wrong)
    with pytest.raises(methods.RoundTripError, match="names differ"):
        methods.check_round_trip(m, w, {"a": t["a"]})


def test_judge_tells_nan_payloads_and_negative_zero_apart() -> None:
    x = np.array([np.nan, -0.0], dtype=np.float32)
    w = workloads.Workload("t", "t", {"x": x})
    other = np.array([np.nan, 0.0], dtype=np.float32)
    with pytest.raises(methods.RoundTripError):
        methods.check_round_trip(_lossless_method(), w, {"x": other})


@pytest.mark.parametrize(
    ("spec", "cast"),
    [
        ("f16", lambda x: x.astype(np.float16).astype(np.float32)),
        ("f16+zstd", lambda x: x.astype(np.float16).astype(np.float32)),
        (
            "int8",
            lambda x: (np.round(x / (np.abs(x).max() / 127)) * (np.abs(x).max() / 127)).astype(
                np.float32
            ),
        ),
    ],
)
def test_lossy_bound_accepts_the_real_rounding_and_rejects_more(spec: str, cast) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(10_000) * 0.02).astype(np.float32)
    x[:3] = [0.0, 1e-7, -3e-6]  # f16 subnormals and zero
    m = methods.Method(f"tw {spec}", "lossy", lambda w: b"", {}, spec=spec, exact=False)
    w = workloads.Workload("t", "t", {"x": x})
    stats = methods.check_round_trip(m, w, {"x": cast(x)})
    assert 0 < stats["rel_rms_err"] < 0.01
    worse = cast(x).copy()
    worse[100] += np.float32(np.abs(x).max() / 50)
    with pytest.raises(methods.RoundTripError, match="exceeds the bound"):
        methods.check_round_trip(m, w, {"x": worse})


def test_topk_delta_bound() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal(1000).astype(np.float32)
    d = (rng.standard_normal(1000) * 1e-3).astype(np.float32)
    new = base + d
    keep = np.argsort(-np.abs(d))[:10]
    sparse = np.zeros_like(d)
    sparse[keep] = d[keep]
    spec = "delta+topk:0.01+zstd"
    m = methods.Method("tw " + spec, "delta", lambda w: b"", {}, spec=spec, exact=False)
    w = workloads.Workload("t", "t", {"x": new}, base={"x": base})
    methods.check_round_trip(m, w, {"x": base + sparse})
    with pytest.raises(methods.RoundTripError):
        methods.check_round_trip(m, w, {"x": base})  # everything dropped: too much error


def test_codec_table_classifies_lossless_and_lossy() -> None:
    assert methods.is_lossless("shuffle+zstd:3")
    assert methods.is_lossless("xor+zstd")
    assert not methods.is_lossless("f16+zstd")
    assert not methods.is_lossless("delta+topk:0.01+f16+zstd")
    specs = [s for s, _ in methods.TW_CODECS]
    assert len(specs) == len(set(specs))


def test_unknown_codec_is_not_available_and_raw_is() -> None:
    ms = {m.name: m for m in methods.all_methods("/nonexistent")}
    assert methods.method_availability(ms["tw raw"]) is None
    fake = methods.Method("tw nosuch", "lossless", lambda w: b"", {}, spec="nosuchstage")
    why = methods.method_availability(fake)
    assert why is not None and "nosuchstage" in why
    api = methods.Method("x", "chunk", lambda w: b"", {}, requires=("no_such_api",))
    assert methods.method_availability(api) == "tensorwire has no tw.no_such_api"


def test_bert_shapes_are_bert_base() -> None:
    shapes = bert.shapes_at_scale(1.0)
    assert len(shapes) == 199
    n = sum(int(np.prod(s)) for _, s in shapes)
    assert 437e6 < 4 * n < 439e6
    assert dict(shapes)["embeddings.word_embeddings.weight"] == (30522, 768)
    assert len(bert.shapes_at_scale(0.01)) == 199
    # one model, sized two ways: at full size both are BERT-base itself
    assert bert.shapes_at_hidden(768) == shapes == bert.shapes()
    quarter = dict(bert.shapes_at_hidden(384))
    assert quarter["embeddings.word_embeddings.weight"] == (15261, 384)
    assert quarter["embeddings.position_embeddings.weight"] == (512, 384)


def test_every_bench_builds_the_model_from_bert_py() -> None:
    t = bert.weights(bert.shapes_at_scale(0.002))
    assert list(t) == [name for name, _ in bert.shapes_at_scale(0.002)]
    assert list(workloads.bert_base(0.002).tensors) == list(t)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(workloads.bert_base(0.002).tensors.values(), t.values())
    )
    base, direction = aggregation.model(16)
    assert list(base) == list(direction) == [name for name, _ in bert.shapes_at_hidden(16)]
    ln = base["embeddings.LayerNorm.weight"]
    assert (
        abs(float(ln.mean()) - 1.0) < 0.05
        and abs(float(direction["pooler.dense.bias"].mean())) < 0.05
    )
    benches = os.path.join(os.path.dirname(os.path.dirname(__file__)), "benches")
    for root, _, files in os.walk(benches):
        for f in files:
            if f.endswith(".py") and f != "bert.py":
                with open(os.path.join(root, f)) as fh:
                    text = fh.read()
                assert "word_embeddings" not in text, f"{f} writes the BERT-shaped model again"


def test_exponent_fit() -> None:
    xs = [1.0, 10.0, 100.0, 1000.0]
    assert scaling.fit_exponent(xs, [2e-3 * x for x in xs]) == pytest.approx(1.0)
    assert scaling.fit_exponent(xs, [5e-4] * 4) == pytest.approx(0.0, abs=1e-9)
    s = scaling.ScalingSeries("x", xs, [1e-3 * x**1.6 for x in xs])
    assert s.verdict(1.0) == "SUPER-linear"
    flat = scaling.ScalingSeries("z", xs, [1e-4 * x**0.5 for x in xs], expect="flat")
    assert flat.verdict(1.0) == "NOT flat"


def _run_bench(tmp_path, *extra: str) -> int:
    import bench

    return bench.main(["--smoke", "--out", str(tmp_path), *extra])


def _assert_self_contained(text: str) -> None:
    """A generated report cites no issue and no file outside the repository."""
    assert "issue #" not in text.lower() and "../" not in text and "DESIGN.md" not in text


def test_smoke_run_writes_a_report_with_every_goal(tmp_path) -> None:
    assert _run_bench(tmp_path, "--formats", "--only", "bert-base") == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Goals" in text and "## Why these goals" in text
    assert "Parts measured: formats." in text
    for goal in ("encode raw + checksums", "decode with full verification", "beat safetensors"):
        assert goal in text
    assert "| seed md5list |" in text and "| `tw raw` |" in text
    assert "## Machine" in text and "| cpu |" in text
    for g in goals.GOALS:  # every goal's reason is printed with its threshold
        assert g.why in text and g.target in text
    _assert_self_contained(text)
    assert (tmp_path / "throughput_bert-base.png").stat().st_size > 1000


def test_report_is_written_again_from_its_json(tmp_path) -> None:
    assert _run_bench(tmp_path, "--formats", "--only", "many-small") == 0
    import bench

    again = tmp_path / "again"
    assert bench.main(["--from-json", str(tmp_path / "results.json"), "--out", str(again)]) == 0
    assert (again / "report.md").read_text() == (tmp_path / "report.md").read_text()
    res = record.read_json(str(tmp_path / "results.json"))
    row = res.row("many-small", "tw raw")
    assert row is not None and row.encode is not None and row.gbps("encode")


def test_a_method_that_breaks_its_round_trip_fails_the_run(tmp_path, monkeypatch) -> None:
    def lossy_pickle(t):
        t = {k: v.copy() for k, v in t.items()}
        first = next(iter(t.values()))
        first.reshape(-1)[0] += 1
        return peers.pickle_encode(t)

    broken = ("broken-pickle", lossy_pickle, peers.pickle_decode, "drops a bit")
    monkeypatch.setattr(peers, "PEERS", [*peers.PEERS, broken])
    assert _run_bench(tmp_path, "--formats", "--only", "many-small") == 1
    assert "broken-pickle" in (tmp_path / "report.md").read_text()


def test_federated_smoke_reports_aggregation_and_bytes_per_round(tmp_path) -> None:
    assert _run_bench(tmp_path, "--aggregation") == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Federated round" in text
    _assert_self_contained(text)
    peers = ("numpy loop", "Flower FedAvg", "Flower legacy FedAvg")
    for what in ("time", "peak RSS"):
        for peer in peers:
            for codec in ("`raw`", "`shuffle+zstd`"):
                goal = f"tw.aggregate {what} vs {peer}"
                assert any(goal in line and codec in line for line in text.splitlines()), goal
        stream = f"tw.Aggregator {what} vs numpy loop"
        assert any(stream in line and "one at a time" in line for line in text.splitlines())
    rows = [line for line in text.splitlines() if line.startswith("| federated |")]
    assert sum("bytes per round vs Flower" in line for line in rows) == 2
    for codec in ("`raw`", "`shuffle+zstd`"):
        bound = "tw.aggregate against blake3 hashing the same payloads"
        assert any(bound in line and codec in line for line in rows), codec
    # 3 peers x 2 codecs x (time, memory) + 2 codecs against blake3 + streaming (time,
    # memory) + 2 byte counts
    assert len(rows) == 18 and not any("NOT MEASURED" in line for line in rows)


def test_a_wrong_aggregate_fails_the_run(tmp_path, monkeypatch) -> None:
    real = aggregation.tw.aggregate

    def off_by_a_bit(updates, weights=None, **kw):
        out = real(updates, weights, **kw)
        first = next(iter(out))
        out[first] = out[first] + 1e-3
        return out

    monkeypatch.setattr(aggregation.tw, "aggregate", off_by_a_bit)
    assert _run_bench(tmp_path, "--aggregation") == 1
    assert "tw.aggregate differs from numpy" in (tmp_path / "report.md").read_text()


def test_round_bytes_counts_flower_default_per_array() -> None:
    t = {"a": np.zeros((3, 4), np.float32), "b": np.ones(5, np.float64)}
    assert aggregation.npsave_bytes(t) == sum(len(b) for b in peers.npsave_encode(t))
    assert aggregation.npsave_bytes(t) > 12 * 4 + 5 * 8


def _t(seconds: float) -> measure.Timing:
    return measure.Timing(seconds, 1, seconds, None, [seconds])


def _verdicts(res: record.Results) -> dict[str, str]:
    return {v.goal.key: v.verdict for v in goals.judge(res)}


def _results(**kw) -> record.Results:
    return record.Results(args="", smoke=True, started="", machine={}, versions={}, **kw)


def test_goals_are_stated_with_a_threshold_and_a_reason() -> None:
    assert len({g.key for g in goals.GOALS}) == len(goals.GOALS)
    assert all(g.why and g.what and g.op in (">=", ">", "<=", "<") for g in goals.GOALS)
    by = {g.key: g for g in goals.GOALS}
    assert by["encode-raw"].target == ">= 5 GB/s"
    assert by["decode-verified"].target == ">= 80% of blake3 multi-threaded"
    assert by["decode-flat"].target == "exponent < 0.2, or slowest/fastest < 2"
    assert by["lossless-size"].target == "<= 0.8 of raw at >= 1 GB/s encode"
    assert by["aggregate-time"].target == ">= 3x faster"
    assert by["aggregate-memory"].target == "<= 0.25x"


def test_each_goal_flips_at_its_threshold() -> None:
    def run(enc: float, dec: float, zero_copy_ms: float, sparse: float, lossless_enc: float):
        rows = [
            record.Row(
                "bert-base",
                "tw raw",
                "lossless",
                10**9,
                size=10**9,
                encode=_t(1 / enc),
                decoders={"decode": _t(1 / dec), "decode verify=False": _t(zero_copy_ms / 1e3)},
            ),
            record.Row(
                "bert-base-update",
                "tw delta+topk:0.01+f16+zstd",
                "delta",
                10**6,
                size=int(sparse * 10**6),
                encode=_t(1.0),
                decoders={"decode": _t(1.0)},
            ),
            record.Row(
                "real-minilm",
                "tw floatzip",
                "lossless",
                10**9,
                size=8 * 10**8,
                encode=_t(1 / lossless_enc),
                decoders={"decode": _t(1 / 4.01)},
            ),
        ]
        refs = {"blake3 multi-threaded (AUTO)": 10.0, "threads": 2.0}
        return _verdicts(_results(rows=rows, refs=refs))

    met = run(5.01, 8.01, 0.99, 0.02, 1.0)
    assert {k: met[k] for k in ("encode-raw", "decode-verified", "decode-zero-copy")} == {
        "encode-raw": "MET",
        "decode-verified": "MET",
        "decode-zero-copy": "MET",
    }
    assert met["sparse-update"] == met["lossless-size"] == met["lossless-decode"] == "MET"
    missed = run(4.99, 7.99, 1.0, 0.0201, 0.99)
    for key in ("encode-raw", "decode-verified", "decode-zero-copy", "sparse-update"):
        assert missed[key] == "NOT MET", key
    assert missed["lossless-size"] == "NOT MET"
    # what the run did not measure is said, not judged
    assert met["aggregate-time"] == met["aggregate-memory"] == met["chunking"] == "NOT MEASURED"


def test_federated_goals_flip_at_their_thresholds() -> None:
    def run(speedup: float, memory: float, ratio: float) -> dict[str, str]:
        stream = {
            "updates": 2,
            "model_mb": 1.0,
            "runs": [
                {
                    "codec": "raw",
                    "tensorwire": {"seconds": 1.0, "peak_growth": 10},
                    "numpy": {"seconds": speedup, "peak_growth": 40},
                    "speedup": speedup,
                    "memory_ratio": memory,
                    "tensorwire_peak_models": 0.1,
                    "numpy_peak_models": 0.4,
                }
            ],
        }
        rb = {
            "clients": 2,
            "flower_bytes": 100,
            "codecs": {"raw": {"total_bytes": int(ratio * 100), "ratio": ratio}},
        }
        return _verdicts(_results(aggregation_stream=stream, round_bytes=rb))

    met = run(3.0, 0.25, 0.99)
    assert met["aggregate-time"] == met["aggregate-memory"] == met["round-bytes"] == "MET"
    missed = run(2.99, 0.26, 1.0)
    assert missed["aggregate-time"] == missed["aggregate-memory"] == "NOT MET"
    assert missed["round-bytes"] == "NOT MET"


def test_aggregate_child_matches_the_reference(tmp_path) -> None:
    """The child programs are files run as processes: each prints its figures as JSON, and
    its result agrees with tw.aggregate and the numpy loop run here."""
    base, direction = aggregation.model(16)
    weights = aggregation.update_weights(3)
    paths = aggregation.write_updates(base, direction, 3, "raw", str(tmp_path))
    payloads = []
    for p in paths:
        with open(p, "rb") as fh:
            payloads.append(fh.read())
    expected = aggregation.checksum(tw.aggregate(payloads, weights))
    assert aggregation.checksum(peers.numpy_fedavg(payloads, weights)) == pytest.approx(expected)
    assert (aggregation.CHILDREN / "aggregate.py").is_file()
    for method in ("tensorwire", "numpy"):
        got = aggregation._run_batch(method, paths, weights, 1, [])
        assert got["checksum"] == pytest.approx(expected, rel=1e-6)
        assert got["seconds"] > 0 and got["peak_growth"] >= 0
    with pytest.raises(RuntimeError, match="aggregate.py no_such_method failed"):
        aggregation._run_batch("no_such_method", paths, weights, 1, [])


def test_codec_ratios_smoke_reports_every_codec(tmp_path) -> None:
    assert _run_bench(tmp_path, "--codec-ratios") == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Codec stages per core" in text
    assert "| codec | size / raw | max error | RMS error |" in text
    for codec in codec_ratios.CODECS:
        assert f"| `{codec}` |" in text
    for codec in codec_ratios.UPDATE_CODECS:
        assert f"| `{codec} (update)` |" in text
    assert "python zstandard:3 (raw bytes)" in text
    _assert_self_contained(text)


def test_unknown_workload_is_refused() -> None:
    import bench

    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--only", "federated"])


def _sharded_figures(ratio: float, peak: float, exponent: float, reducer_peak: float) -> dict:
    """What sharded.run() returns, reduced to what the goals read."""
    workers = {
        "1": {"updates_per_s": 10.0, "cpu_use": 0.9},
        "2": {"updates_per_s": 10.0 * ratio, "cpu_use": 0.95},
    }
    codec = {"workers": workers, "scaling": ratio, "peak_models": peak,
             "adding_models": peak, "payload_over_model": 1.0}  # fmt: skip
    reducer = {"rows": [{"partials": k} for k in (1, 2, 4)], "time_exponent": exponent,
               "fit_from": 2, "seconds_per_merge": 0.01, "partial_mb": 9.0, "merge_gbps": 0.9,
               "peak_models": reducer_peak}  # fmt: skip
    return {"updates": 120, "model_mb": 9.0, "cores": 2, "codecs": {"raw": codec},
            "reducer": reducer}  # fmt: skip


def test_sharded_goals_flip_at_their_thresholds() -> None:
    keys = ("sharded-scaling", "worker-memory", "reducer-linear", "reducer-memory")
    met = _verdicts(_results(sharded=_sharded_figures(1.3, 1.1, 1.2, 2.2)))
    assert [met[k] for k in keys] == ["MET"] * 4
    missed = _verdicts(_results(sharded=_sharded_figures(1.29, 1.11, 1.21, 2.21)))
    assert [missed[k] for k in keys] == ["NOT MET"] * 4
    assert [_verdicts(_results())[k] for k in keys] == ["NOT MEASURED"] * 4


def test_reuse_goal_flips_at_its_threshold() -> None:
    def figures(ratio: float) -> dict[str, float]:
        return {"model_mb": 438.0, "tensors": 199, "threads": 2, "encode_into_gbps": 3.0 * ratio,
                "blake3_gbps": 3.0, "encode_fresh_gbps": 1.3, "encode_into_over_blake3": ratio,
                "decode_out_over_copy": 1.5}  # fmt: skip

    assert _verdicts(_results(reuse=figures(0.90)))["encode-into"] == "MET"
    assert _verdicts(_results(reuse=figures(0.899)))["encode-into"] == "NOT MET"
    assert _verdicts(_results())["encode-into"] == "NOT MEASURED"


def test_reuse_smoke_measures_both_steps_against_their_references(tmp_path) -> None:
    r = reuse.run(1.0, smoke=True)
    assert r["tensors"] == 199 and r["payload_bytes"] == tw.encoded_size(
        bert.weights(bert.shapes_at_scale(0.005))
    )
    for key in ("encode_into_over_blake3", "encode_into_over_fresh", "decode_out_over_copy"):
        assert r[key] > 0
    assert _run_bench(tmp_path, "--reuse") == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Reused memory: encode_into, decode(out=)" in text
    assert "re-encoding BERT-base into a reused buffer" in text


def test_the_merge_check_takes_the_documented_bound_and_no_more() -> None:
    rng = np.random.default_rng(0)
    want = {"w": rng.standard_normal(64).astype(np.float32)}
    m = {"w": np.abs(want["w"]).astype(np.float64)}
    assert sharded.check_merged({"w": want["w"].copy()}, want, m, 8)["identical"]
    # one ulp off is within 2.01 u (n m + |r|) for n = 8
    ulp = {"w": np.nextafter(want["w"], np.float32(np.inf))}
    got = sharded.check_merged(ulp, want, m, 8)
    assert not got["identical"] and 0 < got["worst_over_bound"] <= 1
    # 64 ulps are not, for a single update and nothing to average
    far = {"w": want["w"] * np.float32(1 + 64 * 2.0**-23)}
    with pytest.raises(sharded.MergeMismatch, match="documented float32 bound"):
        sharded.check_merged(far, want, {"w": np.zeros(64)}, 1)
    with pytest.raises(sharded.MergeMismatch, match="float64"):
        sharded.check_merged({"w": want["w"].astype(np.float64)}, want, m, 8)


@pytest.mark.kafka
def test_sharded_smoke_reports_scaling_memory_and_the_reducer(tmp_path) -> None:
    import kafka_broker

    kafka_broker.require_broker()
    assert _run_bench(tmp_path, "--sharded") == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Sharded round on Kafka" in text
    _assert_self_contained(text)
    rows = [line for line in text.splitlines() if line.startswith("| sharded |")]
    # scaling and memory per codec, the reducer's time and memory
    assert len(rows) == 2 * len(sharded.CODECS) + 2
    assert not any("NOT MEASURED" in line for line in rows)
    res = record.read_json(str(tmp_path / "results.json"))
    for c in res.sharded["codecs"].values():
        assert [sum(w["updates_per_worker"]) for w in c["workers"].values()] == [6, 6]
        assert len(c["workers"]["2"]["updates_per_worker"]) == 2
    assert [r["partials"] for r in res.sharded["reducer"]["rows"]] == [1, 2, 4]


@pytest.mark.kafka
def test_a_wrong_merge_fails_the_sharded_run(tmp_path, monkeypatch) -> None:
    import kafka_broker

    kafka_broker.require_broker()
    real = sharded.tw.aggregate

    def off_by_a_bit(updates, weights=None, **kw):
        out = real(updates, weights, **kw)
        first = next(iter(out))
        out[first] = out[first] * np.float32(1 + 2.0**-10)
        return out

    monkeypatch.setattr(sharded, "CODECS", ("raw",))
    monkeypatch.setattr(sharded.tw, "aggregate", off_by_a_bit)
    assert _run_bench(tmp_path, "--sharded") == 1
    assert "documented float32 bound" in (tmp_path / "report.md").read_text()


def _real_rows(wl: str, size: float, enc: float, dec: float, dec_verified: float) -> list:
    """ZipNN at 1 GB/s both ways and 10**8 bytes on ``wl``; tw floatzip at the given size
    and ratios to it; tw auto one byte larger (floatzip is the one judged)."""
    z = record.Row(wl, "ZipNN", "compressor", 10**9, size=10**8, encode=_t(1.0),
                   decoders={"decode": _t(1.0)})  # fmt: skip

    def tw_row(method: str, extra: int) -> record.Row:
        return record.Row(wl, method, "lossless", 10**9, size=int(size * 10**8) + extra,
                          encode=_t(1 / enc), decoders={"decode": _t(1 / dec_verified),
                          "decode verify=False": _t(1 / dec)})  # fmt: skip

    return [z, tw_row("tw floatzip", 0), tw_row("tw auto", 1)]


def test_zipnn_goals_flip_at_their_thresholds() -> None:
    keys = ("zipnn-size", "zipnn-encode", "zipnn-decode", "zipnn-decode-verified")

    def run(*figures: float) -> list[goals.Verdict]:
        rows = [r for wl in goals.REAL_KINDS for r in _real_rows(wl, *figures)]
        res = _results(rows=rows, refs={"threads": 2.0})
        res.workloads = {wl: wl for wl in goals.REAL_KINDS}
        return [v for v in goals.judge(res) if v.goal.key in keys]

    met = run(1.0, 2.0, 2.0, 1.2)
    assert len(met) == 4 * len(goals.REAL_KINDS)
    assert all(v.verdict == "MET" for v in met), [v.measured for v in met]
    assert all("tw floatzip" in v.measured for v in met)
    assert "per core (2 cores each)" in met[1].measured and "float32" in met[0].subject
    missed = run(1.0001, 1.99, 1.99, 1.19)
    assert all(v.verdict == "NOT MET" for v in missed)
    # of floatzip and auto, the faster one within ZipNN's size is judged, else the smaller
    rows = _real_rows("real-minilm", 1.0, 2.0, 2.0, 1.2)
    rows[2].size, rows[2].encode = rows[1].size, _t(0.1)
    res = _results(rows=rows, refs={"threads": 2.0})
    assert goals.best_lossless(res, "real-minilm", 10**8) is rows[2]  # both fit: faster
    rows[1].size = 10**8 - 1
    assert goals.best_lossless(res, "real-minilm", 10**8 - 1) is rows[1]  # only it fits
    assert goals.best_lossless(res, "real-minilm", 10**8 - 2) is rows[1]  # none: smaller
    rows[1].size = 10**8 + 5
    assert goals.best_lossless(res, "real-minilm", 10**8 - 2) is rows[2]
    res = _results(rows=_real_rows("real-minilm", 1.0, 2.0, 2.0, 1.2)[1:])
    res.workloads = {"real-minilm": "x"}
    assert {v.verdict for v in goals.judge(res) if v.goal.key in keys} == {"NOT MEASURED"}
    assert [_verdicts(_results())[k] for k in keys] == ["NOT MEASURED"] * 4


def test_real_weights_smoke_runs_the_compressors_on_every_kind(tmp_path, monkeypatch) -> None:
    # as on a clean machine: the real weights are not installed, a stand-in runs instead
    monkeypatch.setattr(workloads, "ensure_real_model", lambda install: (None, "not here"))
    assert _run_bench(tmp_path, "--formats", "--only", ",".join(workloads.REAL_KINDS)) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Lossless on real weights, per core, against ZipNN" in text
    assert "SMOKE STAND-IN" in text
    res = record.read_json(str(tmp_path / "results.json"))
    for wl in workloads.REAL_KINDS:
        for name, *_ in peers.COMPRESSORS:
            assert res.row(wl, name) is not None, (wl, name)
        assert res.row(wl, "tw floatzip") or res.row(wl, "tw auto"), wl
    zipnn_rows = [line for line in text.splitlines() if "vs ZipNN" in line and "| codecs |" in line]
    assert len(zipnn_rows) == 4 * len(workloads.REAL_KINDS)
    assert not any("NOT MEASURED" in line for line in zipnn_rows)
    _assert_self_contained(text)
