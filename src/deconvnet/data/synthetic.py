"""A synthetic dataset in the exact PASCAL VOC 2012 layout, for the demo, the tests and
anyone without VOC.

``generate(root)`` writes ``root/VOCdevkit/VOC2012`` as VOC has it: JPEGImages/*.jpg,
SegmentationClass/*.png and SegmentationObject/*.png (palette PNGs with 255 void bands
along object borders), Annotations/*.xml, ImageSets/Segmentation and ImageSets/Main
lists, so torchvision's ``VOCSegmentation`` and our reader both read it unchanged.

Each of the 20 object classes has its own colour (hue and brightness), shape and
texture, so it can be told apart at low resolution; the backgrounds are textured but
nearly grey, never confusable with an object colour. An image holds 1-4 instances that
may occlude each other and may be cut by the image border. The first-listed ("main")
object is large (45-85 % of the shorter side) so that object-centred crops have
something to learn from, and the main classes cycle over the 20 classes within each
split so that every class is covered even by small sets.

The output depends only on the arguments (each image draws from its own
``numpy.random.default_rng([seed, index])``): same arguments, same bytes.
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm import tqdm

from deconvnet.data.classes import IGNORE_INDEX, VOC_CLASSES
from deconvnet.data.imageio import write_index_png, write_jpeg
from deconvnet.data.voc import VOC_SUBDIR, tight_box
from deconvnet.errors import DataError, UserError
from deconvnet.runtime.lock import FolderLock

log = logging.getLogger(__name__)

MARKER = "synthetic.json"  # generator arguments, written inside VOC2012
FORMAT_VERSION = 1  # bump when the drawing changes, so an old tree is not taken for a new one

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "ellipse", "hexagon",
          "diamond", "crescent")
TEXTURES = ("solid", "stripes", "dots", "checker", "grid")


@dataclass(frozen=True)
class ClassStyle:
    shape: str
    texture: str
    colour: tuple[int, int, int]  # RGB of the main colour; the texture adds a darker shade


def _class_styles() -> list[ClassStyle]:
    """Styles of classes 1..20: unique colour, and no two classes share shape and texture.

    Classes i and i+10 share a shape but their hues are 180 degrees apart and their
    textures differ; neighbouring hues differ in brightness.
    """
    styles = []
    for i in range(20):
        r, g, b = colorsys.hsv_to_rgb(i / 20, 0.9, 1.0 if i % 2 == 0 else 0.7)
        styles.append(ClassStyle(
            shape=SHAPES[i % 10],
            texture=TEXTURES[(i + i // 10) % 5],
            colour=(round(255 * r), round(255 * g), round(255 * b)),
        ))
    return styles


CLASS_STYLES = _class_styles()  # index 0 is class 1 (aeroplane)


# ---- shapes ------------------------------------------------------------------------------

def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    t = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(t), np.sin(t)], 1)


def _shape_polygons(shape: str) -> list[tuple[np.ndarray, int]]:
    """Polygons in unit coordinates (radius ~1), each with the value it paints (1 fill, 0 cut)."""
    if shape == "circle":
        return [(_regular(48), 1)]
    if shape == "square":
        return [(np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]]), 1)]
    if shape == "triangle":
        return [(_regular(3), 1)]
    if shape == "star":
        outer, inner = _regular(5), _regular(5, 0.42, -np.pi / 2 + np.pi / 5)
        return [(np.stack([outer, inner], 1).reshape(10, 2), 1)]
    if shape == "ring":
        return [(_regular(48), 1), (_regular(48, 0.5), 0)]
    if shape == "cross":
        a, b = 0.3, 1.0
        return [(np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b],
                           [-a, a], [-b, a], [-b, -a], [-a, -a]]), 1)]
    if shape == "ellipse":
        return [(_regular(48) * [1.0, 0.5], 1)]
    if shape == "hexagon":
        return [(_regular(6, phase=0.0), 1)]
    if shape == "diamond":
        return [(np.array([[0, -1], [0.55, 0], [0, 1], [-0.55, 0]]), 1)]
    if shape == "crescent":
        return [(_regular(48), 1), (_regular(48, 0.8) + [0.45, 0], 0)]
    raise ValueError(f"unknown shape {shape}")


def _shape_mask(shape: str, centre: tuple[float, float], radius: float, angle: float,
                height: int, width: int) -> np.ndarray:
    """bool H x W mask of a rotated, scaled shape (clipped by the image border)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    for polygon, value in _shape_polygons(shape):
        points = polygon @ rot.T * radius + centre
        draw.polygon([tuple(p) for p in points.tolist()], fill=value)
    return np.asarray(canvas, dtype=bool)


# ---- textures ----------------------------------------------------------------------------

def _texture(kind: str, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Weight in [0, 1] of the dark shade at object-frame coordinates u, v (pixels)."""
    if kind == "solid":
        return np.zeros_like(u)
    if kind == "stripes":
        return ((u + v) / period % 2 < 1).astype(np.float32)
    if kind == "dots":
        du, dv = (u / period + 0.5) % 1 - 0.5, (v / period + 0.5) % 1 - 0.5
        return (du**2 + dv**2 < 0.09).astype(np.float32)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == "grid":
        return (((u / period) % 1 < 0.3) | ((v / period) % 1 < 0.3)).astype(np.float32)
    raise ValueError(f"unknown texture {kind}")


def _paint_object(rgb: np.ndarray, mask: np.ndarray, style: ClassStyle, centre, radius: float,
                  angle: float, rng: np.random.Generator) -> None:
    """Fill the mask's pixels of rgb (float H x W x 3) with the class's textured colour."""
    rows, cols = np.nonzero(mask)
    x, y = cols - centre[0], rows - centre[1]
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    dark = _texture(style.texture, u, v, period=max(3.0, radius / 2.5))
    colour = np.asarray(style.colour, np.float32) * rng.uniform(0.9, 1.05)  # mild lighting change
    shade = 1.0 - 0.4 * dark[:, None]
    rgb[rows, cols] = np.clip(colour * shade, 0, 255)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured, nearly grey background (float H x W x 3): blotches plus a faint pattern."""
    grid = rng.uniform(-1, 1, size=(max(2, height // 24), max(2, width // 24))).astype(np.float32)
    blotches = np.asarray(Image.fromarray(grid).resize((width, height), Image.BILINEAR))
    base = rng.uniform(70, 190)
    grey = base + 35 * blotches
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = rng.integers(3)
    period = rng.uniform(6, 20)
    if pattern == 1:  # faint wood-like waves
        grey += 12 * np.sin((xx * rng.uniform(-1, 1) + yy) / period)
    elif pattern == 2:  # faint tiles
        grey += 10 * (((xx // (2 * period)) + (yy // (2 * period))) % 2)
    tint = 1.0 + rng.uniform(-0.08, 0.08, size=3).astype(np.float32)  # low saturation
    return grey[..., None] * tint


# ---- one image -----------------------------------------------------------------------------

@dataclass
class SyntheticObject:
    class_id: int
    box: np.ndarray  # float32 [x1, y1, x2, y2], x2/y2 exclusive
    truncated: bool
    occluded: bool


def render(rng: np.random.Generator, height: int, width: int, main_class: int,
           void_width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[SyntheticObject]]:
    """One image: (RGB uint8, class mask uint8, object mask uint8, objects in id order)."""
    rgb = _background(rng, height, width)
    short = min(height, width)
    count = int(rng.choice([1, 2, 2, 3, 3, 4]))
    classes = [main_class] + rng.integers(1, 21, size=count - 1).tolist()
    sizes = [rng.uniform(0.45, 0.85)] + rng.uniform(0.2, 0.5, size=count - 1).tolist()
    # the main object is drawn last (on top) most of the time; otherwise in a random place
    order = list(range(1, count)) + [0]
    if rng.random() < 0.3:
        rng.shuffle(order)

    painted = np.zeros((height, width), dtype=np.uint8)  # drawing slot + 1 of each pixel
    full_area = {}
    for slot in order:
        radius = sizes[slot] * short / 2
        margin = 0.6 * radius  # the centre stays inside so that at most ~40% is cut off
        centre = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
        angle = rng.uniform(0, 2 * np.pi)
        mask = _shape_mask(CLASS_STYLES[classes[slot] - 1].shape, centre, radius, angle, height, width)
        _paint_object(rgb, mask, CLASS_STYLES[classes[slot] - 1], centre, radius, angle, rng)
        painted[mask] = slot + 1
        full_area[slot] = int(mask.sum())

    rgb += rng.normal(0, 4, size=rgb.shape).astype(np.float32)  # sensor noise
    image = np.clip(rgb, 0, 255).round().astype(np.uint8)

    # number the visible instances 1..N in list order; slivers (< 1 % of the image) become void
    objects_map = np.zeros((height, width), dtype=np.uint8)
    class_map = np.zeros((height, width), dtype=np.uint8)
    objects: list[SyntheticObject] = []
    for slot in range(count):
        visible = painted == slot + 1
        area = int(visible.sum())
        if area < 0.01 * height * width:
            objects_map[visible] = class_map[visible] = IGNORE_INDEX
            continue
        objects.append(SyntheticObject(
            class_id=classes[slot],
            box=tight_box(visible),
            truncated=bool(visible[0].any() or visible[-1].any() or visible[:, 0].any() or visible[:, -1].any()),
            occluded=area < 0.9 * full_area[slot],
        ))
        objects_map[visible] = len(objects)
        class_map[visible] = classes[slot]

    # VOC's void band: a few pixels along every boundary between regions
    edges = np.zeros((height, width), dtype=bool)
    vertical = painted[1:] != painted[:-1]
    horizontal = painted[:, 1:] != painted[:, :-1]
    edges[1:] |= vertical
    edges[:-1] |= vertical
    edges[:, 1:] |= horizontal
    edges[:, :-1] |= horizontal
    if void_width > 2:
        edges = ndimage.binary_dilation(edges, iterations=(void_width - 1) // 2)
    objects_map[edges] = class_map[edges] = IGNORE_INDEX
    # the boxes stay those of the visible object, void included, as VOC's XML boxes
    return image, class_map, objects_map, objects


def annotation_xml(image_id: str, height: int, width: int, objects: list[SyntheticObject]) -> str:
    """VOC's Annotations XML; bndbox is 1-based and inclusive as in VOC."""
    parts = [
        "<annotation>",
        "\t<folder>VOC2012</folder>",
        f"\t<filename>{image_id}.jpg</filename>",
        "\t<source>",
        "\t\t<database>deconvnet synthetic VOC</database>",
        "\t\t<annotation>deconvnet.data.synthetic</annotation>",
        "\t</source>",
        "\t<size>",
        f"\t\t<width>{width}</width>",
        f"\t\t<height>{height}</height>",
        "\t\t<depth>3</depth>",
        "\t</size>",
        "\t<segmented>1</segmented>",
    ]
    for obj in objects:
        x1, y1, x2, y2 = (int(c) for c in obj.box)
        parts += [
            "\t<object>",
            f"\t\t<name>{VOC_CLASSES[obj.class_id]}</name>",
            "\t\t<pose>Unspecified</pose>",
            f"\t\t<truncated>{int(obj.truncated)}</truncated>",
            f"\t\t<occluded>{int(obj.occluded)}</occluded>",
            "\t\t<difficult>0</difficult>",
            "\t\t<bndbox>",
            f"\t\t\t<xmin>{x1 + 1}</xmin>",
            f"\t\t\t<ymin>{y1 + 1}</ymin>",
            f"\t\t\t<xmax>{x2}</xmax>",
            f"\t\t\t<ymax>{y2}</ymax>",
            "\t\t</bndbox>",
            "\t</object>",
        ]
    parts.append("</annotation>")
    return "\n".join(parts) + "\n"


# ---- the whole tree ----------------------------------------------------------------------

def _plan(num_images: int, val_fraction: float) -> list[tuple[str, int]]:
    """(split, main class) per image: every 1/val_fraction-th image is val; main classes
    cycle over 1..20 within each split."""
    plan, counters = [], {"train": 0, "val": 0}
    for k in range(num_images):
        split = "val" if int((k + 1) * val_fraction) > int(k * val_fraction) else "train"
        plan.append((split, counters[split] % 20 + 1))
        counters[split] += 1
    return plan


def _image_shape(rng: np.random.Generator, longer: int) -> tuple[int, int]:
    """VOC-like (height, width): mostly landscape, aspect 3:4, 2:3 or 4:5."""
    shorter = round(longer * float(rng.choice([0.75, 0.666, 0.75, 0.8])))
    return (shorter, longer) if rng.random() < 0.7 else (longer, shorter)


def generate(root: str | Path, num_images: int = 200, seed: int = 0, size: int | None = None,
             val_fraction: float = 0.3, jpeg_quality: int = 90,
             void_width: int | None = None) -> Path:
    """Write ``root/VOCdevkit/VOC2012`` and return that folder.

    size: longer image side in pixels (default 500, as VOC). void_width: width in pixels
    of the void band along borders (default ~1 % of the longer side, 5 px at 500 as VOC).
    The tree is written into a temporary folder beside the target and renamed into place,
    so an interrupted run leaves nothing half-written. An existing tree made with the same
    arguments is kept as it is; any other existing tree is refused.
    """
    longer = 500 if size is None else int(size)
    if num_images < 2:
        raise UserError(f"--images must be at least 2 (one train and one val image), got {num_images}")
    if not 32 <= longer <= 4096:
        raise UserError(f"--size must be between 32 and 4096 pixels, got {longer}")
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
    void_width = max(2, round(longer / 100)) if void_width is None else int(void_width)
    arguments = {"generator": "deconvnet.data.synthetic", "format_version": FORMAT_VERSION,
                 "num_images": num_images, "seed": seed, "size": longer,
                 "val_fraction": val_fraction, "jpeg_quality": jpeg_quality,
                 "void_width": void_width}

    target = Path(root) / VOC_SUBDIR
    if target.exists():
        return _existing(target, arguments)
    # one generator at a time per folder; a second one stops at once naming the first's pid
    with FolderLock(target.parent, what="synthetic data generation"):
        if target.exists():  # made while this process waited to start
            return _existing(target, arguments)
        for leftover in target.parent.glob(f".{target.name}.partial-*"):  # of a killed generator
            shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            _write_tree(staging, arguments, seed, num_images, longer, val_fraction, jpeg_quality, void_width)
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700; a dataset is for everyone
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _existing(target: Path, arguments: dict) -> Path:
    marker = target / MARKER
    try:
        previous = json.loads(marker.read_text())
    except (OSError, ValueError):
        previous = None
    if previous == arguments:
        log.info(f"synthetic set already in {target} (same arguments); nothing to do")
        return target
    what = "a synthetic set made with other arguments" if previous else "a dataset that is not this generator's"
    raise DataError(
        f"{target} already holds {what}; refusing to overwrite it. Delete that folder or "
        "choose another --root."
    )


def _write_tree(out: Path, arguments: dict, seed: int, num_images: int, longer: int,
                val_fraction: float, jpeg_quality: int, void_width: int) -> None:
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations",
                "ImageSets/Segmentation", "ImageSets/Main"):
        (out / sub).mkdir(parents=True)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    present: dict[str, set[int]] = {}  # image id -> classes in it
    for k, (split, main_class) in enumerate(tqdm(_plan(num_images, val_fraction),
                                                 desc="synthetic VOC", unit="img")):
        image_id = f"synth_{k:06d}"
        rng = np.random.default_rng([seed, k])
        height, width = _image_shape(rng, longer)
        image, class_map, objects_map, objects = render(rng, height, width, main_class, void_width)
        write_jpeg(out / "JPEGImages" / f"{image_id}.jpg", image, quality=jpeg_quality)
        write_index_png(out / "SegmentationClass" / f"{image_id}.png", class_map)
        write_index_png(out / "SegmentationObject" / f"{image_id}.png", objects_map)
        (out / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, height, width, objects))
        splits[split].append(image_id)
        present[image_id] = {obj.class_id for obj in objects}
    splits["trainval"] = sorted(splits["train"] + splits["val"])

    for name, ids in splits.items():
        lines = "".join(f"{i}\n" for i in ids)
        (out / "ImageSets" / "Segmentation" / f"{name}.txt").write_text(lines)
        (out / "ImageSets" / "Main" / f"{name}.txt").write_text(lines)
        for class_id, class_name in enumerate(VOC_CLASSES[1:], start=1):
            flags = "".join(f"{i} {1 if class_id in present[i] else -1:2d}\n" for i in ids)
            (out / "ImageSets" / "Main" / f"{class_name}_{name}.txt").write_text(flags)
    (out / MARKER).write_text(json.dumps(arguments, indent=2, sort_keys=True) + "\n")


def synth_command(cfg) -> str:
    """The `deconvnet synth` command that makes the synthetic set ``cfg.data.synthetic`` names."""
    syn = cfg.data.synthetic
    size = f" --size {syn.size}" if syn.size is not None else ""
    return f"deconvnet synth --root {cfg.data.root} --images {syn.images}{size} --seed {syn.seed}"


def ensure_synthetic(cfg) -> Path | None:
    """The synthetic set a recipe names (``cfg.data.synthetic``; None: real data, nothing to
    do) in ``cfg.data.root``: made when missing, and checked to be that very set when present
    (another set there is refused, see :func:`generate`). Only the first process of a
    distributed launch makes it; the others are told the command."""
    syn = cfg.data.synthetic
    if syn is None:
        return None
    target = Path(cfg.data.root) / VOC_SUBDIR
    if not target.exists() and os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) != "0":
        raise DataError(f"the synthetic set of this recipe is missing ({target}); make it first "
                        f"with `{synth_command(cfg)}`")
    try:
        return generate(cfg.data.root, num_images=int(syn.images), seed=int(syn.seed), size=syn.size)
    except DataError as err:
        raise DataError(f"{err} This recipe's data (data.synthetic) is made by `{synth_command(cfg)}`.") from None
