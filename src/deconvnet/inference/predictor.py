"""The networks of Table 1 and how their outputs become class-probability maps of one image.

- ``FCN-8s``: softmax of FCN-8s' scores on the whole image;
- ``DeconvNet``: softmax of the instance-wise aggregated DeconvNet scores
  (:func:`deconvnet.inference.instance.instance_scores`);
- ``EDeconvNet``: both combined: the mean of the two probability maps (the paper) or,
  ``ensemble=product``, softmax(deconv_scores * max(0, fcn_scores)) (the official code).

Networks here take float (or uint8) 0-255 RGB batches: :func:`with_normalizer` puts the
input normalisation of their weights in front of them, so windows are cut from the raw
image with zero padding (black), as in training.

:func:`build_predictor` makes the predictor of a config (its checkpoints and ``eval.*``
settings): the one per-image path of ``deconvnet eval`` and ``deconvnet predict``.
"""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from deconvnet.inference.instance import AGGREGATIONS, inference_windows, instance_scores
from deconvnet.models import InputNormalizer

ENSEMBLES = ("mean", "product")


def with_normalizer(network: nn.Module, weights_style: str) -> nn.Module:
    """``network`` preceded by the input normalisation its weights expect."""
    return nn.Sequential(InputNormalizer(weights_style), network)


class EnsemblePredictor(nn.Module):
    """Probability maps (C x H x W) of one image for every method its networks allow."""

    def __init__(
        self,
        deconvnet: nn.Module | None = None,
        fcn: nn.Module | None = None,
        input_size: int = 224,
        num_proposals: int = 50,
        aggregation: str = "max",
        ensemble: str = "mean",
        proposal_batch_size: int = 64,
        window_scale: float = 1.2,
        window_square: bool = True,
    ) -> None:
        super().__init__()
        if deconvnet is None and fcn is None:
            raise ValueError("EnsemblePredictor needs a DeconvNet, an FCN-8s or both")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"eval.aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if ensemble not in ENSEMBLES:
            raise ValueError(f"eval.ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
        self.deconvnet = deconvnet
        self.fcn = fcn
        self.input_size = input_size
        self.num_proposals = num_proposals
        self.aggregation = aggregation
        self.ensemble = ensemble
        self.proposal_batch_size = proposal_batch_size
        self.window_scale = window_scale
        self.window_square = window_square

    @property
    def networks(self) -> list[str]:
        """The score maps this predictor computes: ``FCN-8s`` and/or ``DeconvNet``."""
        return [name for name, net in (("FCN-8s", self.fcn), ("DeconvNet", self.deconvnet)) if net is not None]

    @property
    def methods(self) -> list[str]:
        """The base methods (before CRF) this predictor scores, in Table 1's order."""
        return base_methods(self.networks)

    def windows(self, proposals: np.ndarray | None, height: int, width: int) -> torch.Tensor:
        """The K x 4 windows DeconvNet sees for an image with these proposals: the window rule
        with ``window_scale`` (data.context_scale, 1 for extended boxes) and ``window_square``."""
        boxes = inference_windows(proposals, height, width, self.num_proposals,
                                  context_scale=self.window_scale, square=self.window_square)
        return torch.from_numpy(boxes)

    @torch.no_grad()
    def scores(self, image: torch.Tensor, proposals: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Raw C x H x W score maps: FCN-8s on the whole image, DeconvNet aggregated over the
        proposal windows. ``image``: 1 x 3 x H x W uint8 RGB on the device; ``proposals``:
        K x 4 boxes sorted by score (None or empty: the whole image)."""
        height, width = image.shape[-2:]
        out: dict[str, torch.Tensor] = {}
        if self.fcn is not None:
            out["FCN-8s"] = self.fcn(image.float())[0].float()
        if self.deconvnet is not None:
            windows = self.windows(proposals, height, width).to(image.device)
            out["DeconvNet"] = instance_scores(
                self.deconvnet, image, windows, self.input_size, self.aggregation,
                self.proposal_batch_size,
            )
        return out

    def forward(self, image: torch.Tensor, proposals: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Method -> C x H x W class probabilities of one image (see :meth:`scores`)."""
        return probabilities_from_scores(self.scores(image, proposals), self.ensemble)


def predictor_window_params(data_cfg) -> dict:
    """``window_scale`` / ``window_square`` for :class:`EnsemblePredictor` from ``cfg.data``:
    the training windows' rule (data.context_scale, data.square_windows), no enlargement
    for proposals that are extended windows already (data.proposals.extended)."""
    from deconvnet.data.windows import window_params

    params = window_params(data_cfg, proposals=True)
    return {"window_scale": params["context_scale"], "window_square": params["square"]}


def base_methods(networks: list[str]) -> list[str]:
    """The Table 1 rows (before CRF) that the score maps of ``networks`` give."""
    out = [m for m in ("FCN-8s", "DeconvNet") if m in networks]
    if len(out) == 2:
        out.append("EDeconvNet")
    return out


def probabilities_from_scores(scores: dict[str, torch.Tensor], ensemble: str = "mean") -> dict[str, torch.Tensor]:
    """Method -> probabilities from the raw score maps ``{"FCN-8s": ..., "DeconvNet": ...}``:
    softmax of each, and for EDeconvNet their mean (``mean``) or softmax(deconv x max(0, fcn))
    (``product``)."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"eval.ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    probs = {m: s.float().softmax(0) for m, s in scores.items()}
    if "FCN-8s" in scores and "DeconvNet" in scores:
        if ensemble == "mean":
            probs["EDeconvNet"] = (probs["DeconvNet"] + probs["FCN-8s"]) / 2
        else:
            probs["EDeconvNet"] = (scores["DeconvNet"].float() * scores["FCN-8s"].float().clamp(min=0)).softmax(0)
    return {m: probs[m] for m in base_methods(list(scores))}


def load_networks(cfg: DictConfig) -> tuple[nn.Module | None, nn.Module | None, dict]:
    """(DeconvNet, FCN-8s, DeconvNet's model section) from ``eval.deconvnet_checkpoint`` /
    ``eval.fcn_checkpoint``: each checked to be the right network with ``model.num_classes``
    classes (WeightsError otherwise), wrapped with its input normalisation, on the CPU;
    None when its checkpoint is not set."""
    from deconvnet.runtime.checkpoints import load_network

    expect_classes = int(cfg.model.num_classes)
    loaded: dict[str, nn.Module | None] = {"deconvnet": None, "fcn8s": None}
    deconv_model: dict = {}
    for name, key in (("deconvnet", "deconvnet_checkpoint"), ("fcn8s", "fcn_checkpoint")):
        if not cfg.eval[key]:
            continue
        net = load_network(cfg.eval[key], expect={"name": name, "num_classes": expect_classes})
        model = dict(net.model_config)
        if name == "deconvnet":
            deconv_model = model
        wrapped = with_normalizer(net, model.get("weights_style", "torchvision"))
        if cfg.trainer.channels_last:
            wrapped.to(memory_format=torch.channels_last)
        loaded[name] = wrapped
    return loaded["deconvnet"], loaded["fcn8s"], deconv_model


def build_predictor(cfg: DictConfig) -> EnsemblePredictor:
    """The :class:`EnsemblePredictor` of ``cfg``: its networks (:func:`load_networks`) and the
    ``eval.*`` settings (proposals per image, aggregation, ensemble, window shape), on the CPU."""
    deconvnet, fcn, deconv_model = load_networks(cfg)
    ev = cfg.eval
    return EnsemblePredictor(
        deconvnet, fcn,
        input_size=int(deconv_model.get("input_size", cfg.model.input_size)),
        num_proposals=int(ev.num_proposals), aggregation=str(ev.aggregation),
        ensemble=str(ev.ensemble), proposal_batch_size=int(ev.proposal_batch_size),
        **predictor_window_params(cfg.data),
    )
