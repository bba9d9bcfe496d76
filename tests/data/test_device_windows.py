"""data.pipeline=device: windows cut in one batched call from the store give the worker
pipeline's pixels (OpenCV cut + random crop + flip) for the same (box, crop, flip), and a
sample seed gives both pipelines the same crop and flip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconvnet.config import load_config
from deconvnet.data.datamodules import Stage1DataModule, Stage2DataModule
from deconvnet.data.datasets import Stage1Dataset, single_instance_label
from deconvnet.data.device_windows import DeviceWindowSource, WindowSpecs, cut_batch
from deconvnet.data.sample_seeds import SeededSamples, sample_seed
from deconvnet.data.store import open_store
from deconvnet.data.voc import VOCSegmentationIndex
from deconvnet.data.windows import cut_window
from deconvnet.errors import UserError


@pytest.fixture(scope="module")
def stored(synthetic_voc, tmp_path_factory):
    voc = VOCSegmentationIndex(synthetic_voc, "train")
    return voc, open_store(voc, tmp_path_factory.mktemp("cache"))


def worker_window(voc, i, box, size, crop, ox, oy, flip, position):
    """What the worker pipeline makes of one example (cv2 cut, then crop, then flip)."""
    image, label = voc.image(i), voc.label(i)
    if position >= 0:
        instance = voc.instances(i, label)[position]
        label = single_instance_label(label, instance.mask, instance.class_id)
    image, label = cut_window(image, box, size, label)
    image, label = image[oy:oy + crop, ox:ox + crop], label[oy:oy + crop, ox:ox + crop]
    if flip:
        image, label = image[:, ::-1], label[:, ::-1]
    return image, label


def random_specs(voc, stored, count, size, crop, seed):
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(count):
        i = int(rng.integers(len(voc)))
        h, w = voc.sizes[i]
        cx, cy = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10)
        bw, bh = rng.uniform(8, 1.5 * max(h, w), 2)
        if rng.random() < 0.3:
            bw = bh = float(rng.integers(8, 2 * max(h, w)))  # integer squares, as squared proposals
            cx, cy = round(cx), round(cy)
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], np.float32)
        n = int(stored.instance_starts[i + 1] - stored.instance_starts[i])
        position = int(rng.integers(-1, n)) if n else -1
        items.append({
            "window_image": i, "window_box": torch.from_numpy(box), "window_size": size,
            "window_crop": torch.tensor(rng.integers(0, size - crop + 1, 2)),
            "window_flip": bool(rng.random() < 0.5),
            "window_instance": position,
            "window_class": int(stored.instance_class[stored.instance_starts[i] + position]) if position >= 0 else 0,
            "window_source": "train",
        })
    return items


@pytest.mark.parametrize("size,crop", [(72, 64), (64, 64), (40, 32)])
def test_device_windows_match_the_worker_pipeline(stored, size, crop):
    voc, store = stored
    items = random_specs(voc, store, 48, size, crop, seed=size)
    out = cut_batch(torch.utils.data.default_collate(items), {"train": DeviceWindowSource(store, crop)})
    assert out["image"].shape == (48, 3, crop, crop) and out["image"].dtype == torch.uint8
    assert out["label"].shape == (48, crop, crop) and out["label"].dtype == torch.int64
    diffs = []
    for k, item in enumerate(items):
        ox, oy = item["window_crop"].tolist()
        image, label = worker_window(voc, item["window_image"], item["window_box"].numpy(), size, crop,
                                     ox, oy, item["window_flip"], item["window_instance"])
        np.testing.assert_array_equal(out["label"][k].numpy(), label)  # labels: exactly
        diffs.append(np.abs(out["image"][k].permute(1, 2, 0).numpy().astype(int) - image.astype(int)))
    diffs = np.stack(diffs)
    # OpenCV quantises positions to 1/32 pixel: a few levels at sharp edges, ~0 on average
    assert diffs.max() <= 8 and diffs.mean() < 0.3
    assert (out["label"] == 255).any() and ((out["label"] > 0) & (out["label"] < 255)).any()


def test_a_sample_seed_gives_both_pipelines_the_same_training_window(stored):
    voc, store = stored
    dataset = Stage1Dataset(store, balance=False, train=True, window_size=72, crop_size=64)
    workers, specs = SeededSamples(dataset), SeededSamples(WindowSpecs(dataset, "train"))
    source = {"train": DeviceWindowSource(store, 64)}
    flips = set()
    for k in range(0, len(dataset), 3):
        seed = sample_seed(0, 0, k)
        item, spec = workers[(k, seed)], specs[(k, seed)]
        flips.add(spec["window_flip"])
        out = cut_batch(torch.utils.data.default_collate([spec]), source)
        assert torch.equal(out["label"][0], item["label"])  # the same crop and flip: labels exactly
        assert (out["image"][0].int() - item["image"].int()).abs().max() <= 8
    assert flips == {False, True}


def make_cfg(root, tmp_path, *overrides):
    return load_config(None, [
        f"data.root={root}", "data.train_split=train", "data.batch_size=4", "data.num_workers=0",
        f"data.cache_dir={tmp_path / 'cache'}", f"data.proposals.cache_dir={tmp_path}",
        "data.proposals.method=ground_truth", "data.proposals.min_size=8",
        "data.proposals.workers=1", "data.crop_size=32", "data.window_size=40", *overrides])


@pytest.mark.parametrize("kind", ["stage1", "stage2"])
def test_device_pipeline_batches_through_the_module_hook(synthetic_voc, tmp_path, kind):
    from deconvnet.models import build_model
    from deconvnet.training.segmentation_module import DeconvNetModule

    cfg = make_cfg(synthetic_voc, tmp_path, "data.pipeline=device", f"data.kind={kind}",
                   "model.input_size=32", "model.width=0.0625", "model.pretrained=none")
    dm = (Stage2DataModule if kind == "stage2" else Stage1DataModule)(cfg)
    if kind == "stage2":
        dm.prepare_data()
    dm.setup("fit")
    assert isinstance(dm.train_set, WindowSpecs) and isinstance(dm.val_set, WindowSpecs)
    module = DeconvNetModule(build_model(cfg.model), cfg)
    module._trainer = type("T", (), {"datamodule": dm})()
    torch.manual_seed(0)
    specs = next(iter(dm.train_dataloader()))
    assert set(specs) >= {"window_box", "window_crop", "window_flip"} and "image" not in specs
    batch = module.on_after_batch_transfer(specs, 0)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.uint8
    assert set(batch["label"].unique().tolist()) <= set(range(21)) | {255}
    val = module.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert val["image"].shape == (4, 3, 32, 32)
    # the validation windows are the worker pipeline's (no crop, no flip): same labels
    workers = Stage1DataModule(make_cfg(synthetic_voc, tmp_path))
    workers.setup("validate")
    expected = next(iter(workers.val_dataloader()))
    assert torch.equal(val["label"], expected["label"])
    assert (val["image"].int() - expected["image"].int()).abs().max() <= 8
    # a normal batch goes through untouched
    assert module.on_after_batch_transfer(expected, 0) is expected


def test_device_pipeline_needs_the_store(synthetic_voc, tmp_path):
    with pytest.raises(UserError, match="data.store=true"):
        Stage1DataModule(make_cfg(synthetic_voc, tmp_path, "data.pipeline=device", "data.store=false")).setup("fit")
    with pytest.raises(UserError, match="data.pipeline"):
        Stage1DataModule(make_cfg(synthetic_voc, tmp_path, "data.pipeline=gpu")).setup("fit")
