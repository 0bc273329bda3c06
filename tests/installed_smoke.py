"""An installed tensorwire, checked from outside the source tree: run by `make test-python`
under the oldest Python the wheel claims (3.9) and by `make test-sdist` after building from
the sdist. Imports every module, then round-trips a payload through each main path (encode
and decode, chunk and reassemble, aggregate, save and load, the CLI). Exits nonzero on any
difference."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).resolve().parent.parent / "python"
MODULES = (
    "tensorwire",
    "tensorwire.chunking",
    "tensorwire.cli",
    "tensorwire.errors",
    "tensorwire.fl",
    "tensorwire.formats",
    "tensorwire.frameworks",
    "tensorwire.integrations",
    "tensorwire.transport",
    "tensorwire.transport.kafka",
    "tensorwire.transport.nats",
    "tensorwire.transport.retransmit",
    "tensorwire.types",
)


def main() -> None:
    for name in MODULES:
        importlib.import_module(name)
    import tensorwire as tw

    where = Path(tw.__file__).resolve()
    assert SOURCE not in where.parents, f"tensorwire was imported from the source tree: {where}"
    assert Path(tw._core.__file__).name.endswith(".abi3.so"), tw._core.__file__

    rng = np.random.default_rng(0)
    model = {
        "conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
        "fc.bias": rng.standard_normal(10).astype(np.float32),
        "steps": np.array(7, dtype=np.int64),
    }
    floats = {k: v for k, v in model.items() if v.dtype == np.float32}
    for codec, tensors in (("raw", model), ("shuffle+zstd", model), ("floatzip", floats)):
        back = tw.decode(tw.encode(tensors, codec=codec))
        assert all(np.array_equal(back[k], v) for k, v in tensors.items()), codec

    blob = tw.encode(model)
    reassembler = tw.Reassembler()
    done = [reassembler.add(piece) for piece in reversed(list(tw.chunk(blob, max_bytes=512)))]
    assert [p for p in done if p is not None] == [blob], "reassembly differs"

    updates = [{k: v + i for k, v in floats.items()} for i in range(3)]
    mean = tw.aggregate([tw.encode(u) for u in updates])
    for k in updates[0]:
        assert np.allclose(mean[k], np.mean([u[k] for u in updates], axis=0)), k

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tw")
        tw.save(model, path)
        assert all(np.array_equal(tw.load(path)[k], v) for k, v in model.items())
        script = Path(sys.executable).parent / "tensorwire"
        out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
        assert "Usage" in out.stdout, out.stdout

    print(f"installed tensorwire {tw.__version__} works on Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
