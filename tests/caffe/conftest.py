"""Tiny caffemodels written byte by byte, as the released files are laid out.

The writer encodes the protobuf wire format by hand (varints, length-delimited fields,
packed floats), with the field numbers of BVLC/caffe's caffe.proto and the HyeonwooNoh/caffe
fork's V1 enum, independently of deconvnet.caffe.schema, so that a wrong field number in the
reader's schema fails these tests. Layers carry extra fields (bottom, top, blobs_lr, layer
parameters) like real files do, which the reader must skip.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

V1_TYPES = {"Convolution": 4, "Deconvolution": 39, "InnerProduct": 14, "BN": 43, "ReLU": 18,
            "Pooling": 17, "Unpooling": 42, "Scale": 36}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def length_delimited(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def string(field: int, text: str) -> bytes:
    return length_delimited(field, text.encode())


def blob(array: np.ndarray, legacy: bool = True, double: bool = False) -> bytes:
    """BlobProto: legacy num/channels/height/width (1 2 3 4) or shape (7); data (5) or double_data (8)."""
    array = np.asarray(array)
    out = b""
    if legacy:
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        for field, dim in zip((1, 2, 3, 4), dims):
            out += key(field, 0) + varint(int(dim))
    else:
        out += length_delimited(7, length_delimited(1, b"".join(varint(int(d)) for d in array.shape)))
    flat = array.reshape(-1)
    if double:
        out += length_delimited(8, flat.astype("<f8").tobytes())  # packed doubles: raw little-endian
    else:
        out += length_delimited(5, flat.astype("<f4").tobytes())  # packed floats
    return out


def v1_layer(name: str, kind: str, blobs: list[np.ndarray], legacy: bool = True,
             double: bool = False) -> bytes:
    """V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6, blobs_lr 7, + a param."""
    body = string(2, "bottom") + string(3, name) + string(4, name) + key(5, 0) + varint(V1_TYPES[kind])
    body += b"".join(length_delimited(6, blob(b, legacy, double)) for b in blobs)
    body += b"".join(key(7, 5) + struct.pack("<f", lr) for lr in (1.0, 2.0)[: len(blobs)])
    body += length_delimited(10, key(1, 0) + varint(7))  # convolution_param {num_output: 7}
    if kind == "BN":
        body += length_delimited(45, key(3, 0) + varint(1))  # bn_param {bn_mode: INFERENCE}
    return length_delimited(2, body)


def current_layer(name: str, kind: str, blobs: list[np.ndarray]) -> bytes:
    """LayerParameter: name 1, type 2 (string), bottom 3, top 4, blobs 7."""
    body = string(1, name) + string(2, kind) + string(3, "bottom") + string(4, name)
    body += b"".join(length_delimited(7, blob(b, legacy=False)) for b in blobs)
    return length_delimited(100, body)


def net(layers: list[bytes], name: str = "tiny") -> bytes:
    """NetParameter: name 1, input 3 + input_dim 4 (as the deploy files), then the layers."""
    header = string(1, name) + string(3, "data") + b"".join(key(4, 0) + varint(d) for d in (1, 3, 32, 32))
    return header + b"".join(layers)


class CaffeWriter:
    varint = staticmethod(varint)
    blob = staticmethod(blob)
    v1_layer = staticmethod(v1_layer)
    current_layer = staticmethod(current_layer)
    net = staticmethod(net)

    @staticmethod
    def write(path: Path, layers: list[bytes]) -> Path:
        path.write_bytes(net(layers))
        return path


@pytest.fixture
def caffe_writer() -> type[CaffeWriter]:
    return CaffeWriter
