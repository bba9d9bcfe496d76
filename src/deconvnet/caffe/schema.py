"""The minimal part of Caffe's ``caffe.proto`` needed to read the weights of a ``.caffemodel``.

A ``.caffemodel`` is a serialised ``NetParameter``. Its layers come in one of three
generations, all handled here:

- current (``layer``, field 100): ``LayerParameter`` {name 1, type 2 (string), blobs 7};
- V1 (``layers``, field 2): ``V1LayerParameter`` {name 4, type 5 (enum), blobs 6} — the
  DeconvNet release and its Caffe fork (HyeonwooNoh/caffe) write this one;
- V0 (``layers``, field 2, whose ``layer`` field 1 holds a ``V0LayerParameter``
  {name 1, type 2 (string), blobs 50}) — the oldest Caffe models.

``BlobProto``: num 1, channels 2, height 3, width 4 (the legacy 4-d shape), data 5 (packed
float), shape 7 (``BlobShape`` {dim 1, packed int64}), double_data 8 (packed double).
Field numbers as in BVLC/caffe ``src/caffe/proto/caffe.proto``; the fork's V1 enum adds BN
(43), UNPOOLING (42) and its data layers. The V1 ``type`` is declared as a plain int32 here:
the wire format is the same varint, and the fork's own enum values then survive parsing.

Everything else in a caffemodel (layer parameters, solver fields) is skipped as unknown
fields. The message classes are built at import time from descriptors written in Python
(``descriptor_pb2`` + ``message_factory``): no ``protoc``, no Caffe installation.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "deconvnet_caffe"  # our own package name: never clashes with a real caffe_pb2

_F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# V1LayerParameter.LayerType values that matter for reading weights (BVLC + the fork)
V1_LAYER_TYPES = {
    4: "Convolution", 14: "InnerProduct", 39: "Deconvolution", 43: "BN",
    17: "Pooling", 18: "ReLU", 42: "Unpooling", 6: "Dropout", 40: "Crop", 25: "Eltwise",
}


def _field(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: int,
           label: int = OPTIONAL, type_name: str | None = None, packed: bool = False) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = f".{PACKAGE}.{type_name}"
    if packed:
        field.options.packed = True


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(name="deconvnet_caffe_minimal.proto",
                                               package=PACKAGE, syntax="proto2")

    shape = proto.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, _F.TYPE_INT64, REPEATED, packed=True)

    blob = proto.message_type.add(name="BlobProto")
    _field(blob, "num", 1, _F.TYPE_INT64)
    _field(blob, "channels", 2, _F.TYPE_INT64)
    _field(blob, "height", 3, _F.TYPE_INT64)
    _field(blob, "width", 4, _F.TYPE_INT64)
    _field(blob, "data", 5, _F.TYPE_FLOAT, REPEATED, packed=True)
    _field(blob, "shape", 7, _F.TYPE_MESSAGE, type_name="BlobShape")
    _field(blob, "double_data", 8, _F.TYPE_DOUBLE, REPEATED, packed=True)

    v0 = proto.message_type.add(name="V0LayerParameter")
    _field(v0, "name", 1, _F.TYPE_STRING)
    _field(v0, "type", 2, _F.TYPE_STRING)
    _field(v0, "blobs", 50, _F.TYPE_MESSAGE, REPEATED, type_name="BlobProto")

    v1 = proto.message_type.add(name="V1LayerParameter")
    _field(v1, "layer", 1, _F.TYPE_MESSAGE, type_name="V0LayerParameter")
    _field(v1, "name", 4, _F.TYPE_STRING)
    _field(v1, "type", 5, _F.TYPE_INT32)
    _field(v1, "blobs", 6, _F.TYPE_MESSAGE, REPEATED, type_name="BlobProto")

    layer = proto.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, _F.TYPE_STRING)
    _field(layer, "type", 2, _F.TYPE_STRING)
    _field(layer, "blobs", 7, _F.TYPE_MESSAGE, REPEATED, type_name="BlobProto")

    net = proto.message_type.add(name="NetParameter")
    _field(net, "name", 1, _F.TYPE_STRING)
    _field(net, "layers", 2, _F.TYPE_MESSAGE, REPEATED, type_name="V1LayerParameter")
    _field(net, "layer", 100, _F.TYPE_MESSAGE, REPEATED, type_name="LayerParameter")
    return proto


def _build_classes() -> dict[str, type]:
    pool = descriptor_pool.DescriptorPool()
    file = pool.Add(_file_descriptor())
    del file
    names = ("BlobShape", "BlobProto", "V0LayerParameter", "V1LayerParameter",
             "LayerParameter", "NetParameter")
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        make = message_factory.GetMessageClass
    else:  # older protobuf
        make = message_factory.MessageFactory(pool).GetPrototype
    return {name: make(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in names}


_CLASSES = _build_classes()
NetParameter = _CLASSES["NetParameter"]
BlobProto = _CLASSES["BlobProto"]
