"""``codec_ratios.measure`` on the float32 tensors of a safetensors file, as JSON.

    RAYON_NUM_THREADS=1 python benches/children/codec_ratios.py PATH REPEAT UPDATE_REPEAT MAX

MAX > 0 keeps the MAX smallest tensors (the smoke run). Run by ``codec_ratios.run``, which
sets ``RAYON_NUM_THREADS=1`` (read once, when tensorwire's thread pool starts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec_ratios
import numpy as np
from safetensors.numpy import load_file


def main(argv: list[str]) -> None:
    path, repeat, update_repeat, most = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    weights = {k: v for k, v in load_file(path).items() if v.dtype == np.float32}
    if most > 0:
        weights = {k: weights[k] for k in sorted(weights, key=lambda k: weights[k].nbytes)[:most]}
    print(json.dumps(codec_ratios.measure(weights, repeat, update_repeat)))


if __name__ == "__main__":
    main(sys.argv[1:])
