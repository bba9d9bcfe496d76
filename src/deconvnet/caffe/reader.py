"""Read the weights of a ``.caffemodel`` into numpy arrays, without Caffe.

``read_caffemodel(path) -> CaffeModel``: the layers that hold weights, in file order, each
with its name, type and blobs (float32 arrays in Caffe's layout). Blob shapes come from
``shape.dim`` when present, otherwise from the legacy num/channels/height/width, with the
leading 1s of the legacy form kept (a BN scale is 1 x C x 1 x 1, an old InnerProduct weight
1 x 1 x out x in): the converter decides what a shape means. A file that is not a
caffemodel, is truncated, or holds blobs whose data does not fill their shape raises one
:class:`~deconvnet.errors.WeightsError` line naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deconvnet.errors import WeightsError

log = logging.getLogger(__name__)


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


@dataclass
class CaffeModel:
    path: Path
    format: str  # "layer" (current), "V1" or "V0"
    layers: list[CaffeLayer]

    def by_name(self) -> dict[str, CaffeLayer]:
        return {layer.name: layer for layer in self.layers}


def _blob_array(blob, where: str) -> np.ndarray:
    if blob.HasField("shape"):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))
    if len(blob.data):
        values = np.array(blob.data, dtype=np.float32)
    else:
        values = np.array(blob.double_data, dtype=np.float64).astype(np.float32)
    expected = int(np.prod(shape)) if shape else 0
    if values.size != expected:
        raise WeightsError(
            f"{where}: the blob shape {'x'.join(map(str, shape)) or '(none)'} needs {expected} "
            f"values but the file holds {values.size}; the caffemodel is damaged or was written "
            "by an incompatible tool"
        )
    return values.reshape(shape)


def read_caffemodel(path: str | Path) -> CaffeModel:
    """Every layer with weights of the caffemodel at ``path`` (see the module docstring)."""
    from google.protobuf.message import DecodeError

    from deconvnet.caffe.schema import NetParameter

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"caffemodel not found: {path}")
    data = path.read_bytes()
    net = NetParameter()
    try:
        net.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise WeightsError(
            f"{path}: not a readable caffemodel ({type(err).__name__}: {err}); the file is "
            "truncated or of another format; download it again (deconvnet download official-...)"
        ) from None

    from deconvnet.caffe.schema import V1_LAYER_TYPES

    layers: list[CaffeLayer] = []
    formats = set()
    for layer in net.layer:
        formats.add("layer")
        layers.append(CaffeLayer(layer.name, layer.type,
                                 [_blob_array(b, f"{path}, layer '{layer.name}'") for b in layer.blobs]))
    for layer in net.layers:
        if layer.HasField("layer"):  # V0: everything sits in the nested V0LayerParameter
            formats.add("V0")
            v0 = layer.layer
            layers.append(CaffeLayer(v0.name, v0.type,
                                     [_blob_array(b, f"{path}, layer '{v0.name}'") for b in v0.blobs]))
        else:
            formats.add("V1")
            kind = V1_LAYER_TYPES.get(int(layer.type), f"V1 type {int(layer.type)}")
            layers.append(CaffeLayer(layer.name, kind,
                                     [_blob_array(b, f"{path}, layer '{layer.name}'") for b in layer.blobs]))
    with_weights = [layer for layer in layers if layer.blobs]
    if not with_weights:
        raise WeightsError(
            f"{path}: no layer with weights found ({len(layers)} layers): not a trained caffemodel "
            "(a .prototxt, a solver state or another file?)"
        )
    fmt = "+".join(sorted(formats))
    log.info("%s: %d layers with weights (%s format)", path, len(with_weights), fmt)
    return CaffeModel(path, fmt, with_weights)
