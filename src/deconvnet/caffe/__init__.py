"""The released Caffe models of DeconvNet and FCN-8s: a protobuf reader and the converters.

- :mod:`.schema`: the minimal ``caffe.proto`` messages (built in Python, no protoc);
- :mod:`.reader`: ``read_caffemodel(path) -> CaffeModel`` (layers, names, numpy blobs);
- :mod:`.convert`: ``convert_caffemodel(source, network, out, bn)`` (``deconvnet convert``);
- :mod:`.proposals`: the release's cached EdgeBoxes (.mat) -> ``data.proposals.method=file``.
"""

from deconvnet.caffe.convert import NETWORKS, convert_caffemodel
from deconvnet.caffe.reader import CaffeLayer, CaffeModel, read_caffemodel

__all__ = ["NETWORKS", "CaffeLayer", "CaffeModel", "convert_caffemodel", "read_caffemodel"]
