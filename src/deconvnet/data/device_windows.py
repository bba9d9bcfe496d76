"""Training windows cut on the training device (``data.pipeline=device``).

With the worker pipeline, each loader worker cuts a window with OpenCV, crops it randomly
and flips it. Here the loader hands over only what a window is (image index, window box,
random crop offset, flip, kept instance), which costs nothing to load, and after the batch
reaches the device (the LightningModule's ``on_after_batch_transfer``) all its windows are
cut in one batched call from the decoded store (:mod:`deconvnet.data.store`), made
resident on the device once (a GPU copy of the store; on the CPU the memory maps
themselves). The random 224 crop and the horizontal flip are folded into the sampling
positions, so each output pixel is sampled once.

Same meaning as the worker pipeline (the tests compare them):

* the window box is mapped onto ``window_size x window_size`` pixels with pixel centres at
  i + 0.5 (:func:`deconvnet.data.windows.window_affine`), then output pixel (v, u) of the
  crop is window pixel (oy + v, ox + u), or (oy + v, ox + crop - 1 - u) when flipped;
* the image is sampled bilinearly with 0 outside the image (blended at the border, as
  OpenCV's constant border), rounded to uint8;
* the labels are sampled at the nearest pixel with OpenCV's exact rounding (its 1/1024
  fixed-point coordinates), 255 outside the image; a stage-1 window keeps only its
  instance's class (the object mask == position + 1), other objects become 0, void stays 255.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from deconvnet.data.classes import IGNORE_INDEX
from deconvnet.data.transforms import RandomCropFlip
from deconvnet.errors import UserError

WINDOW_KEYS = ("window_image", "window_box", "window_size", "window_crop", "window_flip",
               "window_instance", "window_class")
SOURCE_KEY = "window_source"
# OpenCV's warpAffine works in fixed point with 2^10 steps per pixel (AB_BITS)
_AB_SCALE = 1024


class WindowSpecs(Dataset):
    """The examples of a window dataset (``datasets.WindowDataset`` on a ``StoreReader``) as
    window descriptions: what :func:`cut_windows` needs, the random crop and flip drawn as the
    worker pipeline draws them (:meth:`RandomCropFlip.draw`, from torch's generator, seeded
    per sample by the training loader: :mod:`deconvnet.data.sample_seeds`), so that a sample
    seed gives both pipelines the same window."""

    def __init__(self, dataset, source: str) -> None:
        reader = dataset.reader
        if not hasattr(reader, "object_mask"):
            raise UserError("data.pipeline=device cuts windows from the decoded store: set "
                            "data.store=true (or data.pipeline=workers)")
        self.reader, self.table, self.train = reader, dataset.table, bool(dataset.train)
        self.crop_size = int(dataset.crop_size)
        self.window_size = int(dataset.window_size) if self.train else self.crop_size
        self.source = source
        self.augment = RandomCropFlip(self.crop_size)  # the worker pipeline's draws

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, k: int) -> dict:
        i = int(self.table.image_index[k])
        position = int(self.table.instance[k])
        class_id = 0
        if position >= 0:
            class_id = int(self.reader.instance_class[int(self.reader.instance_starts[i]) + position])
        if self.train:
            ox, oy, flip = self.augment.draw(self.window_size)
        else:
            ox, oy, flip = 0, 0, False
        return {
            "window_image": i,
            "window_box": torch.from_numpy(np.asarray(self.table.boxes[k], np.float32).copy()),
            "window_size": self.window_size,
            "window_crop": torch.tensor([ox, oy], dtype=torch.int64),
            "window_flip": flip,
            "window_instance": position,
            "window_class": class_id,
            SOURCE_KEY: self.source,
        }

    def describe(self) -> str:
        return f"{len(self)} window descriptions (cut on the device)"


class DeviceWindowSource:
    """One split's decoded store as flat tensors on a device (copied once per device)."""

    def __init__(self, reader, crop_size: int) -> None:
        self.reader, self.crop_size = reader, int(crop_size)
        self._on: dict[str, dict[str, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        return {"reader": self.reader, "crop_size": self.crop_size, "_on": {}}

    def nbytes(self) -> int:
        return sum(int(self.reader.array(kind).nbytes) for kind in ("images", "class", "object"))

    def tensors(self, device: torch.device) -> dict[str, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            device = torch.device(device)
            if device.type == "cuda":
                free = torch.cuda.mem_get_info(device)[0]
                if self.nbytes() > 0.5 * free:
                    raise UserError(
                        f"the decoded store of split '{self.reader.split}' ({self.nbytes() / 2**30:.1f} GiB) "
                        f"does not fit beside training on {device} ({free / 2**30:.1f} GiB free); "
                        "use data.pipeline=workers")
            with warnings.catch_warnings():  # read-only memory maps: never written through
                warnings.simplefilter("ignore", UserWarning)
                flat = {kind: torch.from_numpy(self.reader.array(kind)) for kind in ("images", "class", "object")}
            tensors = {kind: t.to(device) for kind, t in flat.items()}
            tensors["image_offsets"] = torch.from_numpy(self.reader.offsets("images")).to(device)
            tensors["mask_offsets"] = torch.from_numpy(self.reader.offsets("class")).to(device)
            tensors["sizes"] = torch.tensor(self.reader.sizes, dtype=torch.int64).reshape(-1, 2).to(device)
            self._on[key] = tensors
        return self._on[key]

    def cut(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"image": uint8 B x 3 x c x c, "label": int64 B x c x c}`` for a batch of window specs."""
        device = batch["window_box"].device
        return cut_windows(self.tensors(device), batch, self.crop_size)


def cut_batch(batch: dict, sources: dict[str, DeviceWindowSource] | None) -> dict:
    """Replace a batch of window descriptions by its cut windows (other batches unchanged)."""
    if not isinstance(batch, dict) or "window_box" not in batch:
        return batch
    name = batch[SOURCE_KEY][0] if isinstance(batch[SOURCE_KEY], (list, tuple)) else batch[SOURCE_KEY]
    if not sources or name not in sources:
        raise RuntimeError(f"a batch of window descriptions of source '{name}' arrived, but the "
                           "DataModule has no such window source (data.pipeline=device)")
    return sources[name].cut(batch)


# ------------------------------------------------------------------------- the sampling


def cut_windows(store: dict[str, torch.Tensor], batch: dict, crop_size: int) -> dict[str, torch.Tensor]:
    """Cut B windows from flat store tensors (see :class:`DeviceWindowSource`) in one call."""
    index = batch["window_image"].long()
    boxes = batch["window_box"].to(torch.float32)
    window_size = batch["window_size"].long()
    crop = batch["window_crop"].long()
    flip = batch["window_flip"].bool()
    heights, widths = store["sizes"][index, 0], store["sizes"][index, 1]
    # ---- sampling positions, float64 (a few hundred numbers per window) -------------------
    xs_nearest, xs_linear = _axis(boxes[:, 0], boxes[:, 2], boxes[:, 1], boxes[:, 3], window_size,
                                  crop[:, 0], flip, crop_size, columns=True)
    ys_nearest, ys_linear = _axis(boxes[:, 1], boxes[:, 3], boxes[:, 0], boxes[:, 2], window_size,
                                  crop[:, 1], None, crop_size, columns=False)
    image = _bilinear(store["images"], store["image_offsets"][index], heights, widths, ys_linear, xs_linear)
    label = _labels(store, index, heights, widths, ys_nearest, xs_nearest,
                    batch["window_instance"].long(), batch["window_class"].long())
    return {"image": image, "label": label}


def _axis(start, stop, other_start, other_stop, window_size, crop, flip, crop_size, columns: bool):
    """Source coordinates along one axis for every output pixel (N x crop_size):
    OpenCV's nearest index (int64) and the exact bilinear position (float64)."""
    f64 = torch.float64
    size = window_size.to(f64)[:, None]
    start, stop = start.to(f64)[:, None], stop.to(f64)[:, None]
    other_start, other_stop = other_start.to(f64)[:, None], other_stop.to(f64)[:, None]
    u = torch.arange(crop_size, device=start.device, dtype=f64)[None]
    if flip is not None:
        u = torch.where(flip[:, None], crop_size - 1 - u, u)
    j = crop.to(f64)[:, None] + u  # the pixel of the window_size x window_size window
    # window_affine's forward map: scale s = size / extent, offset m = (0.5 - start) * s - 0.5
    s, s_other = size / (stop - start), size / (other_stop - other_start)
    m = (0.5 - start) * s - 0.5
    # OpenCV inverts it in double: D = 1 / (sx * sy); A11 = sy * D, A22 = sx * D; b = -A * m
    det = 1.0 / ((s * s_other) if columns else (s_other * s))
    a = s_other * det
    b = -a * m
    linear = a * j + b
    if columns:  # x: adelta[x] = round(A11 * x * 1024), X0 = round(b1 * 1024) + 512
        fixed = torch.round(b * _AB_SCALE) + _AB_SCALE // 2 + torch.round(a * j * _AB_SCALE)
    else:  # y: Y0 = round((A22 * y + b2) * 1024) + 512
        fixed = torch.round((a * j + b) * _AB_SCALE) + _AB_SCALE // 2
    nearest = torch.div(fixed, _AB_SCALE, rounding_mode="floor").long()
    return nearest, linear


def _bilinear(flat, offsets, heights, widths, ys, xs) -> torch.Tensor:
    """uint8 N x 3 x c x c: bilinear samples of H x W x 3 images stored back to back in
    ``flat`` at positions ys (N x c) and xs (N x c); pixels outside the image count as 0.

    One gather of the 2c x 2c neighbouring pixels (3 bytes each) per window, then the
    interpolation along x and along y (separable)."""
    y0f, x0f = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0f).float(), (xs - x0f).float()
    h, w = heights[:, None], widths[:, None]
    # the two taps of every output row / column, interleaved: N x c x 2 -> N x 2c
    rows = y0f.long()[:, :, None] + torch.arange(2, device=ys.device)
    cols = x0f.long()[:, :, None] + torch.arange(2, device=xs.device)
    row_weight = torch.stack([1 - fy, fy], -1) * ((rows >= 0) & (rows < h[:, :, None]))
    col_weight = torch.stack([1 - fx, fx], -1) * ((cols >= 0) & (cols < w[:, :, None]))
    rows = rows.clamp_min(0).minimum(h[:, :, None] - 1).flatten(1)
    cols = cols.clamp_min(0).minimum(w[:, :, None] - 1).flatten(1)
    pixel = (offsets // 3)[:, None, None] + (rows * w)[:, :, None] + cols[:, None, :]  # N x 2c x 2c
    values = flat.view(-1, 3)[pixel].float()  # N x 2c x 2c x 3
    n, c = ys.shape
    values = values.view(n, c, 2, c, 2, 3)
    left, right = col_weight[:, None, None, :, 0, None], col_weight[:, None, None, :, 1, None]
    along_x = torch.addcmul(values[:, :, :, :, 0] * left, values[:, :, :, :, 1], right)  # N x c x 2 x c x 3
    top, bottom = row_weight[:, :, 0, None, None], row_weight[:, :, 1, None, None]
    out = torch.addcmul(along_x[:, :, 0] * top, along_x[:, :, 1], bottom)  # N x c x c x 3
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 3, 1, 2).contiguous()


def _labels(store, index, heights, widths, ys, xs, instance, class_id) -> torch.Tensor:
    """int64 N x c x c nearest labels (255 outside); stage-1 windows keep one instance."""
    h, w = heights[:, None], widths[:, None]
    valid = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]
    idx = (store["mask_offsets"][index][:, None, None]
           + (ys.clamp(0).minimum(h - 1) * w)[:, :, None] + xs.clamp(0).minimum(w - 1)[:, None, :])
    label = store["class"][idx].long()
    single = instance >= 0
    if bool(single.any()):
        objects = store["object"][idx].long()
        own = objects == (instance + 1)[:, None, None]
        kept = torch.where(own, class_id[:, None, None],
                           torch.where(label == IGNORE_INDEX, IGNORE_INDEX, 0))
        label = torch.where(single[:, None, None], kept, label)
    return torch.where(valid, label, torch.full_like(label, IGNORE_INDEX))
