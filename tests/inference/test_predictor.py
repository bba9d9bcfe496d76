"""Probability maps from the networks' scores: softmax, mean and product ensembles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.inference.predictor import EnsemblePredictor, base_methods, probabilities_from_scores


def test_mean_and_product_ensembles():
    torch.manual_seed(0)
    deconv, fcn = torch.randn(4, 3, 5), torch.randn(4, 3, 5)
    mean = probabilities_from_scores({"DeconvNet": deconv, "FCN-8s": fcn}, "mean")
    assert list(mean) == ["FCN-8s", "DeconvNet", "EDeconvNet"]
    torch.testing.assert_close(mean["DeconvNet"], deconv.softmax(0))
    torch.testing.assert_close(mean["EDeconvNet"], (deconv.softmax(0) + fcn.softmax(0)) / 2)
    product = probabilities_from_scores({"DeconvNet": deconv, "FCN-8s": fcn}, "product")
    # the released code: deconv .* max(0, fcn), then softmax
    torch.testing.assert_close(product["EDeconvNet"], (deconv * fcn.clamp(min=0)).softmax(0))
    assert torch.allclose(product["EDeconvNet"].sum(0), torch.ones(3, 5))
    with pytest.raises(ValueError, match="ensemble"):
        probabilities_from_scores({"DeconvNet": deconv}, "median")


def test_rows_follow_the_networks_present():
    assert base_methods(["DeconvNet"]) == ["DeconvNet"]
    assert base_methods(["FCN-8s"]) == ["FCN-8s"]
    assert base_methods(["DeconvNet", "FCN-8s"]) == ["FCN-8s", "DeconvNet", "EDeconvNet"]
    only_fcn = EnsemblePredictor(fcn=torch.nn.Conv2d(3, 21, 1))
    probs = only_fcn(torch.randint(0, 255, (1, 3, 8, 10), dtype=torch.uint8))
    assert list(probs) == ["FCN-8s"] and probs["FCN-8s"].shape == (21, 8, 10)
    with pytest.raises(ValueError, match="needs a DeconvNet"):
        EnsemblePredictor()


def test_uncovered_pixels_fall_back_to_uniform_then_background():
    """Max aggregation starts at 0: a pixel no window covers has all-zero scores, uniform
    probabilities, and argmax picks class 0 (background), as the official script."""
    def network(x):
        out = torch.zeros(x.shape[0], 21, *x.shape[2:])
        out[:, 5] = 3.0
        return out

    predictor = EnsemblePredictor(deconvnet=network_module(network), input_size=8, window_scale=1.0,
                                  window_square=False)
    image = torch.zeros(1, 3, 20, 20, dtype=torch.uint8)
    probs = predictor(image, proposals=torch.tensor([[0.0, 0.0, 10.0, 10.0]]).numpy())["DeconvNet"]
    labels = probs.argmax(0)
    assert (labels[:10, :10] == 5).all() and (labels[10:, :] == 0).all() and (labels[:, 10:] == 0).all()
    torch.testing.assert_close(probs[:, 15, 15], torch.full((21,), 1 / 21))


def network_module(fn):
    class Wrapped(torch.nn.Module):
        def forward(self, x):
            return fn(x)

    return Wrapped()


class _ConstantScores(torch.nn.Module):
    """The same score vector at every pixel, whatever the input."""

    def __init__(self, vector: torch.Tensor) -> None:
        super().__init__()
        self.vector = vector

    def forward(self, x):
        return self.vector.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()


@pytest.mark.parametrize("ensemble", ["mean", "product"])
@pytest.mark.parametrize("aggregation", ["max", "sum"])
def test_predictor_applies_its_aggregation_and_ensemble(ensemble, aggregation):
    deconv = torch.tensor([-2.0, 3.0, 1.0])
    fcn = torch.tensor([0.5, 0.1, 1.0])
    predictor = EnsemblePredictor(_ConstantScores(deconv), _ConstantScores(fcn), input_size=8,
                                  aggregation=aggregation, ensemble=ensemble, window_square=False,
                                  num_proposals=2)  # the third box is not used
    image = torch.zeros(1, 3, 24, 24, dtype=torch.uint8)
    # two windows overlap on [8, 16) x [8, 16); pixel (4, 4) in one window, (20, 20) in none
    boxes = np.array([[0, 0, 16, 16], [8, 8, 24, 24], [0, 16, 8, 24]], np.float32)
    probs = predictor(image, proposals=boxes)
    twice = 2 * deconv if aggregation == "sum" else deconv.clamp(min=0)  # accumulator starts at 0
    once = deconv if aggregation == "sum" else deconv.clamp(min=0)
    for (y, x), raw in (((12, 12), twice), ((4, 4), once), ((20, 4), torch.zeros(3))):
        torch.testing.assert_close(probs["DeconvNet"][:, y, x], raw.softmax(0))
        expected = ((raw.softmax(0) + fcn.softmax(0)) / 2 if ensemble == "mean"
                    else (raw * fcn.clamp(min=0)).softmax(0))
        torch.testing.assert_close(probs["EDeconvNet"][:, y, x], expected)
        torch.testing.assert_close(probs["FCN-8s"][:, y, x], fcn.softmax(0))


# --------------------------- build_predictor: the eval.* settings reach it (fast, no evaluation)


def _eval_cfg(*overrides: str):
    from deconvnet.config import load_config

    return load_config(None, list(overrides))


def test_build_predictor_takes_every_eval_setting(tiny_checkpoint_factory, tmp_path):
    from deconvnet.inference.predictor import build_predictor
    from deconvnet.models import InputNormalizer

    deconv = tiny_checkpoint_factory(tmp_path / "d.ckpt", "deconvnet", input_size=64, weights_style="caffe")
    fcn = tiny_checkpoint_factory(tmp_path / "f.ckpt", "fcn8s")
    cfg = _eval_cfg(f"eval.deconvnet_checkpoint={deconv}", f"eval.fcn_checkpoint={fcn}",
                    "eval.num_proposals=7", "eval.aggregation=sum", "eval.ensemble=product",
                    "eval.proposal_batch_size=3", "data.context_scale=1.5", "data.square_windows=false",
                    "model.input_size=224")
    predictor = build_predictor(cfg)
    assert (predictor.num_proposals, predictor.aggregation, predictor.ensemble) == (7, "sum", "product")
    assert predictor.proposal_batch_size == 3
    assert (predictor.window_scale, predictor.window_square) == (1.5, False)
    assert predictor.input_size == 64  # the checkpoint's own, not model.input_size
    assert predictor.networks == ["FCN-8s", "DeconvNet"]
    # each network behind the normalisation its own weights expect
    assert isinstance(predictor.deconvnet[0], InputNormalizer) and predictor.deconvnet[0].style == "caffe"
    assert isinstance(predictor.fcn[0], InputNormalizer) and predictor.fcn[0].style == "torchvision"
    # extended proposals are windows already: no enlargement
    extended = build_predictor(_eval_cfg(f"eval.deconvnet_checkpoint={deconv}", "data.proposals.extended=true"))
    assert (extended.window_scale, extended.window_square) == (1.0, True)
    assert extended.fcn is None and extended.networks == ["DeconvNet"]


def test_load_networks_channels_last_and_a_missing_network(tiny_checkpoint_factory, tmp_path):
    from deconvnet.inference.predictor import load_networks

    fcn = tiny_checkpoint_factory(tmp_path / "f.ckpt", "fcn8s")
    deconvnet, loaded_fcn, model = load_networks(_eval_cfg(f"eval.fcn_checkpoint={fcn}", "trainer.channels_last=true"))
    assert deconvnet is None and model == {}
    conv = next(m for m in loaded_fcn.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    _, plain, _ = load_networks(_eval_cfg(f"eval.fcn_checkpoint={fcn}"))
    conv = next(m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous()


def test_load_networks_refuses_a_checkpoint_of_the_other_network(tiny_checkpoint_factory, tmp_path):
    from deconvnet.errors import WeightsError
    from deconvnet.inference.predictor import load_networks

    fcn = tiny_checkpoint_factory(tmp_path / "f.ckpt", "fcn8s")
    with pytest.raises(WeightsError):
        load_networks(_eval_cfg(f"eval.deconvnet_checkpoint={fcn}"))
    few = tiny_checkpoint_factory(tmp_path / "few.ckpt", "deconvnet", num_classes=5)
    with pytest.raises(WeightsError):
        load_networks(_eval_cfg(f"eval.deconvnet_checkpoint={few}"))


def test_predictor_defaults_are_the_papers_and_bad_settings_are_named():
    predictor = EnsemblePredictor(fcn=torch.nn.Conv2d(3, 21, 1))
    assert (predictor.input_size, predictor.num_proposals, predictor.proposal_batch_size) == (224, 50, 64)
    assert (predictor.aggregation, predictor.ensemble) == ("max", "mean")
    assert (predictor.window_scale, predictor.window_square) == (1.2, True)
    with pytest.raises(ValueError) as error:
        EnsemblePredictor()
    assert str(error.value) == "EnsemblePredictor needs a DeconvNet, an FCN-8s or both"
    with pytest.raises(ValueError) as error:
        EnsemblePredictor(fcn=torch.nn.Conv2d(3, 21, 1), aggregation="mean")
    assert str(error.value) == "eval.aggregation must be one of ('max', 'sum'), got 'mean'"
    with pytest.raises(ValueError) as error:
        EnsemblePredictor(fcn=torch.nn.Conv2d(3, 21, 1), ensemble="max")
    assert str(error.value) == "eval.ensemble must be one of ('mean', 'product'), got 'max'"


def test_predictor_windows_follow_its_shape_settings():
    net = torch.nn.Conv2d(3, 21, 1)
    # no proposals: the whole 20 x 30 image (H x W), enlarged 1.2 times, then squared
    whole = EnsemblePredictor(deconvnet=net).windows(None, 20, 30)
    torch.testing.assert_close(whole, torch.tensor([[-3.0, -8.0, 33.0, 28.0]]))
    box = np.array([[10, 10, 20, 30]], np.float32)  # w 10, h 20
    flat = EnsemblePredictor(deconvnet=net, window_square=False).windows(box, 40, 40)
    torch.testing.assert_close(flat, torch.tensor([[9.0, 8.0, 21.0, 32.0]]))
    square = EnsemblePredictor(deconvnet=net, window_square=True).windows(box, 40, 40)
    torch.testing.assert_close(square, torch.tensor([[3.0, 8.0, 27.0, 32.0]]))


def test_the_default_ensemble_is_the_mean():
    torch.manual_seed(1)
    deconv, fcn = torch.randn(3, 2, 2), torch.randn(3, 2, 2)
    probs = probabilities_from_scores({"DeconvNet": deconv, "FCN-8s": fcn})
    torch.testing.assert_close(probs["EDeconvNet"], (deconv.softmax(0) + fcn.softmax(0)) / 2)


def test_a_checkpoint_without_input_size_or_weights_style_gets_the_configs(tiny_checkpoint_factory, tmp_path):
    """Older checkpoints record neither: the config's model.input_size and torchvision-style
    normalisation (the defaults) are used."""
    from deconvnet.inference.predictor import build_predictor

    path = tiny_checkpoint_factory(tmp_path / "old.ckpt", "deconvnet", input_size=224)
    checkpoint = torch.load(path, weights_only=False)
    for key in ("input_size", "weights_style"):
        del checkpoint["hyper_parameters"]["model"][key]
    torch.save(checkpoint, path)
    predictor = build_predictor(_eval_cfg(f"eval.deconvnet_checkpoint={path}", "model.input_size=224"))
    assert predictor.input_size == 224
    assert predictor.deconvnet[0].style == "torchvision"
