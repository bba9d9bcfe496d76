"""Turn the released Caffe models into files our code loads: ``deconvnet convert``.

- ``deconvnet``: DeconvNet_trainval_inference.caffemodel (or stage_1/stage_2_train_result)
  -> a checkpoint that ``eval.deconvnet_checkpoint`` accepts (``state_dict`` with the
  ``net.`` prefix, ``hyper_parameters["model"]``), the format ``load_network`` reads.
- ``fcn8s``: the FCN authors' fcn-8s-pascal.caffemodel (staged FCN-8s, dashed layer names)
  or a voc-fcn8s model (underscored names) -> a checkpoint for ``eval.fcn_checkpoint``.
- ``vgg16``: VGG_ILSVRC_16_layers(_conv).caffemodel -> a torchvision-layout VGG16 state dict
  (``features.N.*``, ``classifier.0/3/6.*``) for ``model.pretrained=FILE`` with
  ``model.weights_style=caffe``.

Blobs are matched by layer name. Caffe's convolution weights are laid out as PyTorch's
Conv2d (out, in, k, k) and its deconvolution weights as ConvTranspose2d (in, out, k, k), so
they are copied as they are; fully connected weights (1 x 1 x out x in in the legacy form)
are reshaped into the 7x7 / 1x1 convolutions. The network's width, number of classes and
(DeconvNet) input size are read from the blobs. Every unmatched, missing or mis-shaped
blob is named in one WeightsError line; nothing is written unless everything fits.

BatchNorm. The release's BN layer (HyeonwooNoh/caffe ``bn_layer.cpp``) holds two blobs,
scale and shift (1 x C x 1 x 1). In INFERENCE mode it computes ``y = scale * x + shift``:
BN_make_INFERENCE_script.py folded the population statistics into them
(scale = gamma / sqrt(var + 1e-9), shift = beta - gamma * mean / sqrt(var + 1e-9)). We load
that exactly into ``BatchNorm2d`` (eval mode): weight = scale, bias = shift, running_mean = 0
and running_var = the float32 value v with v + eps == 1, so 1 / sqrt(v + eps) is exactly 1.
The stage-1/2 training results are in LEARN mode (``--bn learn``): scale and shift are gamma
and beta, the population statistics are unknown (left at mean 0, var 1): use them to start
training (``model.init_from``), where BN uses batch statistics, not for evaluation.

FCN-8s. The staged fcn-8s-pascal has no skip scaling (``model.fcn_skip_scaling=false`` is
recorded); its score2 / score4 deconvolutions may carry a bias, which is folded exactly into
score-pool4 / score-pool3 (both sums are pixel-wise after the crop). A voc-fcn8s-atonce model
with ``scale_pool4``/``scale_pool3`` layers of 0.01 / 0.0001 gets the at-once scaling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deconvnet.caffe.reader import CaffeLayer, CaffeModel, read_caffemodel
from deconvnet.errors import UserError, WeightsError
from deconvnet.hashing import file_sha256

log = logging.getLogger(__name__)

NETWORKS = ("deconvnet", "fcn8s", "vgg16")
BN_MODES = ("inference", "learn")
NET_PREFIX = "net."

# our module (last name component) -> the release's layer names, first match wins
DECONVNET_NAMES: dict[str, tuple[str, ...]] = {
    "deconv_fc6": ("fc6-deconv",),
    "bndeconv_fc6": ("fc6-deconv-bn",),
    "classifier": ("seg-score-voc", "seg-score"),
}
FCN_NAMES: dict[str, tuple[str, ...]] = {
    "score_fr": ("score-fr", "score_fr", "score"),
    "upscore2": ("score2", "upscore2"),
    "score_pool4": ("score-pool4", "score_pool4"),
    "upscore_pool4": ("score4", "upscore_pool4"),
    "score_pool3": ("score-pool3", "score_pool3"),
    "upscore8": ("upsample", "upscore8", "bigscore"),
}
# a deconvolution bias folded into the bias of the score layer it is summed with
FCN_BIAS_FOLDS = {"upscore2": "score_pool4", "upscore_pool4": "score_pool3"}
FCN_SCALE_LAYERS = {"scale_pool4": 0.01, "scale_pool3": 0.0001}
VGG16_CAFFE_CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                     "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")
VGG16_CAFFE_FCS = {"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def unit_running_var(eps: float) -> torch.Tensor:
    """The float32 v for which eval-mode batch_norm(x, mean 0, var v, eps) returns x exactly."""
    probe = torch.tensor([1.2345678, -3.75, 1e-3, 123.456, 7.0], dtype=torch.float32).view(1, 5, 1, 1)
    value = torch.tensor(1.0 - eps, dtype=torch.float32)
    candidates = [value]
    for direction in (2.0, 0.0):
        step = value
        for _ in range(4):
            step = torch.nextafter(step, torch.tensor(direction))
            candidates.append(step)
    for v in candidates:
        out = torch.nn.functional.batch_norm(probe, torch.zeros(5), v.repeat(5), None, None, False, 0.0, eps)
        if torch.equal(out, probe):
            return v
    return value  # not exact on this backend: off by at most one float32 rounding


class _Plan:
    """Collects tensors to copy and every problem, so that one error names them all."""

    def __init__(self, model: CaffeModel) -> None:
        self.model = model
        self.layers = model.by_name()
        self.used: set[str] = set()
        self.problems: list[str] = []
        self.state: dict[str, torch.Tensor] = {}
        self.pending_bias: dict[str, np.ndarray] = {}  # FCN-8s: deconvolution biases to fold

    def layer(self, candidates: tuple[str, ...], what: str) -> CaffeLayer | None:
        for name in candidates:
            if name in self.layers:
                self.used.add(name)
                return self.layers[name]
        self.problems.append(f"missing layer {' or '.join(repr(c) for c in candidates)} (for {what})")
        return None

    def blob(self, layer: CaffeLayer, index: int, shape: tuple[int, ...], key: str,
             reshape: bool = False, vector: bool = False) -> np.ndarray | None:
        """Blob ``index`` of ``layer`` as ``shape``: exact, a vector in any 1-padded form
        (``vector``), or (``reshape``) a fully connected weight of the same out x in size."""
        if index >= len(layer.blobs):
            self.problems.append(f"layer '{layer.name}' has {len(layer.blobs)} blob(s), blob {index} "
                                 f"expected for {key} ({_shape(shape)})")
            return None
        blob = layer.blobs[index]
        squeezed = tuple(d for d in blob.shape if d != 1)
        wanted = tuple(d for d in shape if d != 1)
        fc_form = (shape[0], int(np.prod(shape[1:]))) if len(shape) > 1 else shape
        if blob.shape == tuple(shape):
            return blob
        if vector and squeezed == wanted and blob.size == int(np.prod(shape)):
            return blob.reshape(shape)
        if reshape and blob.size == int(np.prod(shape)) and squeezed == tuple(d for d in fc_form if d != 1):
            return blob.reshape(shape)
        self.problems.append(f"layer '{layer.name}' blob {index}: expected {_shape(shape)} for {key}, "
                             f"found {_shape(blob.shape)}")
        return None

    def put(self, key: str, value: np.ndarray | torch.Tensor | None) -> None:
        if value is not None:
            self.state[key] = torch.as_tensor(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value

    def unmatched(self, ignore: tuple[str, ...] = ()) -> None:
        extra = [name for name in self.layers if name not in self.used and name not in ignore]
        if extra:
            self.problems.append("unmatched layer(s) with weights: " + ", ".join(f"'{n}'" for n in extra))

    def raise_problems(self, target: str) -> None:
        if self.problems:
            raise WeightsError(
                f"{self.model.path} does not fit {target} ({len(self.problems)} problem(s)): "
                + "; ".join(self.problems)
                + ". Check --network (deconvnet | fcn8s | vgg16) and that the file is the released one."
            )


def _require(model: CaffeModel, name: str, network: str) -> CaffeLayer:
    layers = model.by_name()
    if name not in layers or not layers[name].blobs:
        found = ", ".join(list(layers)[:12])
        raise WeightsError(
            f"{model.path}: no layer '{name}' with weights, so it is not a {network} caffemodel "
            f"(its layers: {found}{', ...' if len(layers) > 12 else ''}); check --network"
        )
    return layers[name]


def _width(model: CaffeModel, network: str) -> float:
    """Our width multiplier from conv1_1's 64 (at width 1) output channels."""
    return float(_require(model, "conv1_1", network).blobs[0].shape[0]) / 64.0


def _fill_conv(plan: _Plan, layer: CaffeLayer | None, prefix: str, module: nn.Module,
               reshape: bool = False) -> None:
    if layer is None:
        return
    plan.put(f"{prefix}.weight", plan.blob(layer, 0, tuple(module.weight.shape), f"{prefix}.weight", reshape=reshape))
    if module.bias is not None:
        plan.put(f"{prefix}.bias", plan.blob(layer, 1, tuple(module.bias.shape), f"{prefix}.bias", vector=True))
    elif len(layer.blobs) > 1:
        plan.problems.append(f"layer '{layer.name}' has a bias blob but {prefix} has no bias")


def _fill_bn(plan: _Plan, layer: CaffeLayer | None, prefix: str, module: nn.BatchNorm2d, bn: str) -> None:
    if layer is None:
        return
    channels = (module.num_features,)
    plan.put(f"{prefix}.weight", plan.blob(layer, 0, channels, f"{prefix} scale", vector=True))
    plan.put(f"{prefix}.bias", plan.blob(layer, 1, channels, f"{prefix} shift", vector=True))
    var = unit_running_var(module.eps) if bn == "inference" else torch.tensor(1.0)
    plan.put(f"{prefix}.running_mean", torch.zeros(channels))
    plan.put(f"{prefix}.running_var", var.repeat(module.num_features).clone())
    plan.put(f"{prefix}.num_batches_tracked", torch.tensor(0, dtype=torch.long))


# ------------------------------------------------------------------------------ DeconvNet


def deconvnet_state(model: CaffeModel, bn: str = "inference") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict of our DeconvNet, its cfg.model section) from the release's layers."""
    from deconvnet.models import DeconvNet

    width = _width(model, "DeconvNet")
    fc6 = _require(model, "fc6", "DeconvNet").blobs[0]
    classifier = next((model.by_name()[n] for n in DECONVNET_NAMES["classifier"] if n in model.by_name()), None)
    if classifier is None:
        _require(model, "seg-score-voc", "DeconvNet")
    num_classes = int(classifier.blobs[0].shape[0])
    # fc6 is a k x k convolution in the release (k = input / 32); an InnerProduct-shaped blob
    # (1 x 1 x out x in) says nothing about k: the paper's 224 then
    square_kernel = fc6.ndim == 4 and fc6.shape[-1] == fc6.shape[-2] and fc6.shape[:2] != (1, 1)
    input_size = 32 * int(fc6.shape[-1]) if square_kernel else 224
    try:
        net = DeconvNet(num_classes=num_classes, input_size=input_size, width=width)
    except ValueError as err:
        raise WeightsError(f"{model.path}: the blobs describe no DeconvNet we can build: {err}") from None
    plan = _Plan(model)
    for path, module in net.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        names = DECONVNET_NAMES.get(leaf, (leaf,))
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            _fill_conv(plan, plan.layer(names, path), path, module, reshape=leaf in ("fc6", "fc7"))
        elif isinstance(module, nn.BatchNorm2d):
            _fill_bn(plan, plan.layer(names, path), path, module, bn)
    plan.unmatched()
    plan.raise_problems(net.spec)
    section = {"name": "deconvnet", "num_classes": num_classes, "input_size": input_size,
               "width": width, "pretrained": "none", "weights_style": "caffe", "init_from": None}
    return plan.state, section


# --------------------------------------------------------------------------------- FCN-8s


def _fcn_skip_scaling(plan: _Plan) -> bool:
    """True (at-once) when scale_pool4/scale_pool3 layers hold the at-once factors."""
    present = {name: plan.layers[name] for name in FCN_SCALE_LAYERS if name in plan.layers}
    if not present:
        return False
    for name, expected in FCN_SCALE_LAYERS.items():
        layer = present.get(name)
        plan.used.add(name)
        value = float(layer.blobs[0].reshape(-1)[0]) if layer is not None and layer.blobs else None
        if value is None or not np.isclose(value, expected, rtol=1e-4):
            plan.problems.append(f"layer '{name}' should scale by {expected}, found {value}")
    return True


def _fill_upsampler(plan: _Plan, layer: CaffeLayer | None, path: str, module: nn.ConvTranspose2d,
                    bias_into: str | None) -> None:
    """A bias-free ConvTranspose2d from a (possibly grouped, possibly biased) deconvolution."""
    if layer is None:
        return
    weight = layer.blobs[0] if layer.blobs else None
    channels, _, k, _ = module.weight.shape
    if weight is not None and weight.shape == (channels, 1, k, k) and channels > 1:
        full = np.zeros((channels, channels, k, k), np.float32)  # group=C: one filter per channel
        full[range(channels), range(channels)] = weight[:, 0]
        layer = CaffeLayer(layer.name, layer.type, [full, *layer.blobs[1:]])
    plan.put(f"{path}.weight", plan.blob(layer, 0, tuple(module.weight.shape), f"{path}.weight"))
    if len(layer.blobs) > 1:
        bias = plan.blob(layer, 1, (channels,), f"{path} bias", vector=True)
        if bias is None:
            return
        if bias_into is None:
            if np.any(bias != 0):
                plan.problems.append(f"layer '{layer.name}' has a non-zero bias that {path} cannot hold")
            return
        plan.pending_bias[bias_into] = plan.pending_bias.get(bias_into, 0) + bias


def fcn8s_state(model: CaffeModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict of our FCN8s, its cfg.model section) from a staged or at-once FCN-8s."""
    from deconvnet.models import FCN8s

    width = _width(model, "FCN-8s")
    plan = _Plan(model)
    score = plan.layer(FCN_NAMES["score_fr"], "score_fr")
    if score is None or not score.blobs:
        plan.raise_problems("FCN-8s")
    num_classes = int(score.blobs[0].shape[0])
    skip_scaling = _fcn_skip_scaling(plan)
    try:
        net = FCN8s(num_classes=num_classes, width=width, skip_scaling=skip_scaling)
    except ValueError as err:
        raise WeightsError(f"{model.path}: the blobs describe no FCN-8s we can build: {err}") from None
    for path, module in net.named_modules():
        leaf = path.rsplit(".", 1)[-1]
        if isinstance(module, nn.ConvTranspose2d):
            _fill_upsampler(plan, plan.layer(FCN_NAMES[leaf], path), path, module, FCN_BIAS_FOLDS.get(leaf))
        elif isinstance(module, nn.Conv2d):
            names = FCN_NAMES.get(leaf, (leaf,))
            _fill_conv(plan, plan.layer(names, path), path, module, reshape=leaf in ("fc6", "fc7"))
    for target, bias in plan.pending_bias.items():
        if f"{target}.bias" in plan.state:
            plan.state[f"{target}.bias"] = plan.state[f"{target}.bias"] + torch.as_tensor(bias)
    plan.unmatched()
    plan.raise_problems(net.spec)
    section = {"name": "fcn8s", "num_classes": num_classes, "width": width, "fcn_batch_norm": False,
               "fcn_skip_scaling": skip_scaling, "pretrained": "none", "weights_style": "caffe",
               "init_from": None}
    return plan.state, section


# ---------------------------------------------------------------------------------- VGG16


def vgg16_state(model: CaffeModel) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG16 state dict (``features.N``, ``classifier.0/3(/6)``)."""
    from deconvnet.models.vgg import TORCHVISION_CONV_KEYS

    _require(model, "conv1_1", "VGG16")
    plan = _Plan(model)
    for caffe_name, key in zip(VGG16_CAFFE_CONVS, TORCHVISION_CONV_KEYS):
        layer = plan.layer((caffe_name,), key)
        if layer is None:
            continue
        if len(layer.blobs) != 2 or layer.blobs[0].ndim != 4:
            plan.problems.append(f"layer '{caffe_name}': expected a 4-d weight and a bias, found "
                                 + ", ".join(_shape(b.shape) for b in layer.blobs))
            continue
        plan.put(f"{key}.weight", layer.blobs[0])
        plan.put(f"{key}.bias", layer.blobs[1].reshape(-1))
    for caffe_name, key in VGG16_CAFFE_FCS.items():
        if caffe_name == "fc8" and caffe_name not in plan.layers:
            continue  # the ImageNet classifier: optional (the _conv release drops it)
        layer = plan.layer((caffe_name,), key)
        if layer is None:
            continue
        if len(layer.blobs) != 2:
            plan.problems.append(f"layer '{caffe_name}': expected a weight and a bias, found "
                                 f"{len(layer.blobs)} blob(s)")
            continue
        weight = layer.blobs[0]
        out = int(layer.blobs[1].size)
        if weight.size % max(out, 1):
            plan.problems.append(f"layer '{caffe_name}': weight {_shape(weight.shape)} does not have "
                                 f"{out} outputs like its bias")
            continue
        # an InnerProduct (1 x 1 x out x in) or a convolution (out x in x k x k): torchvision
        # flattens pool5 as C x H x W, the order of Caffe's fc6 columns and of conv kernels
        plan.put(f"{key}.weight", weight.reshape(out, -1))
        plan.put(f"{key}.bias", layer.blobs[1].reshape(-1))
    plan.unmatched()
    plan.raise_problems("VGG16")
    return plan.state


# ------------------------------------------------------------------------------- writing


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert_caffemodel(source: str | Path, network: str, out: str | Path, bn: str = "inference") -> Path:
    """Read ``source``, map it onto ``network`` and write ``out`` atomically; returns ``out``.

    deconvnet / fcn8s: a checkpoint ``{"state_dict": {"net.*"}, "hyper_parameters": {"model"},
    "global_step": 0, "converted_from": {...}}``; vgg16: a plain torchvision-layout state dict.
    """
    if network not in NETWORKS:
        raise UserError(f"--network {network!r} is unknown; choose one of {', '.join(NETWORKS)}")
    if bn not in BN_MODES:
        raise UserError(f"--bn {bn!r} is unknown; choose one of {', '.join(BN_MODES)}")
    source, out = Path(source), Path(out)
    model = read_caffemodel(source)
    if network == "vgg16":
        _atomic_save(vgg16_state(model), out)
        log.info("wrote %s: use it with model.pretrained=%s model.weights_style=caffe", out, out)
        return out
    builders: dict[str, Callable[[], tuple[dict, dict]]] = {
        "deconvnet": lambda: deconvnet_state(model, bn),
        "fcn8s": lambda: fcn8s_state(model),
    }
    state, section = builders[network]()
    checkpoint = {
        "state_dict": {NET_PREFIX + key: value for key, value in state.items()},
        "hyper_parameters": {"model": section},
        "global_step": 0,
        "converted_from": {"file": source.name, "sha256": file_sha256(source), "format": model.format,
                           "network": network, "bn": bn if network == "deconvnet" else None},
    }
    _atomic_save(checkpoint, out)
    log.info("wrote %s (%s, %d tensors)", out, section, len(state))
    return out
