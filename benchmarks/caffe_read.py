"""Time `read_caffemodel` on a caffemodel holding one VGG16 fc6-sized blob (4096 x 512 x 7 x 7,
102.8 M floats, 411 MB), the largest layer of the released models; prints JSON.

    PYTHONPATH=src python benchmarks/caffe_read.py [--floats-scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from deconvnet.caffe import read_caffemodel


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def write_model(path: Path, shape: tuple[int, ...]) -> None:
    """A V1 NetParameter with one layer 'fc6' and one legacy 4-d blob of random floats."""
    data = np.random.default_rng(0).standard_normal(int(np.prod(shape)), dtype=np.float32)
    dims = b"".join(_varint(i << 3) + _varint(d) for i, d in zip((1, 2, 3, 4), shape))
    blob = dims + _field(5, data.astype("<f4").tobytes())
    layer = _field(4, b"fc6") + _varint(5 << 3) + _varint(4) + _field(6, blob)
    path.write_bytes(_field(2, layer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--channels", type=int, default=512, help="input channels of the blob (512: VGG16 fc6)")
    args = parser.parse_args()
    shape = (4096, args.channels, 7, 7)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fc6.caffemodel"
        write_model(path, shape)
        start = time.perf_counter()
        model = read_caffemodel(path)
        seconds = time.perf_counter() - start
        assert model.layers[0].blobs[0].shape == shape
        print(json.dumps({"file_mb": round(path.stat().st_size / 1e6, 1), "read_s": round(seconds, 2),
                          "mb_per_s": round(path.stat().st_size / 1e6 / seconds, 1)}))


if __name__ == "__main__":
    main()
