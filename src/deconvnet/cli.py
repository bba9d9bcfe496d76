"""The `deconvnet` command: a thin dispatcher to the functions that do the work.

    deconvnet train CONFIG [key=value ...]
    deconvnet eval CONFIG [key=value ...]
    deconvnet predict CONFIG IMAGE... [key=value ...] [--out DIR]
    deconvnet score --pred DIR --gt DIR [--split NAME --root DIR | --ids FILE] [--out DIR]
    deconvnet synth --root DIR [--images N] [--seed S]
    deconvnet proposals CONFIG [key=value ...]
    deconvnet download voc2012|sbd|edge-model|official|official-<piece> --root DIR
    deconvnet convert MODEL.caffemodel --network deconvnet|fcn8s|vgg16 --out FILE [--bn inference|learn]
    deconvnet convert EDGEBOX_DIR --proposals --data-root DIR --split SPLIT --out FILE.npz
    deconvnet windows-report CONFIG [key=value ...]
    deconvnet cache CONFIG [key=value ...]
    deconvnet pipeline EXPERIMENT_DIR [--steps a,b] [--full] [key=value ...]   (options go anywhere)

Heavy imports (torch, lightning) happen inside each command so `--help` is instant.

Errors the user can fix (deconvnet.errors.UserError, also when another process raised it:
a DataLoader worker or a ddp_spawn rank sends it back as itself, see errors.py) and
file-system errors on output folders (full, read-only, forbidden) are printed as one line,
`deconvnet <cmd>: error: <message>`, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys

# OSErrors that mean "this folder cannot be written": the user's to fix, not a bug
_FOLDER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _config_and_overrides(args: argparse.Namespace):
    from deconvnet.config import load_config

    return load_config(args.config, args.overrides)


def _cmd_train(args: argparse.Namespace) -> int:
    from deconvnet.training.run import train

    train(_config_and_overrides(args))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from deconvnet.inference.run import evaluate

    evaluate(_config_and_overrides(args))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from deconvnet.config import load_config
    from deconvnet.inference.predict import predict

    overrides = [a for a in args.rest if "=" in a]
    images = [a for a in args.rest if "=" not in a]
    if not images:
        raise SystemExit("deconvnet predict: give at least one image path")
    predict(load_config(args.config, overrides), images, out=args.out)
    return 0


def _ids_to_score(args: argparse.Namespace) -> list[str] | None:
    """The ids named by --ids FILE or --split NAME --root DIR (None: every ground-truth PNG)."""
    from pathlib import Path

    from deconvnet.data.voc import voc_folder
    from deconvnet.errors import UserError

    if args.split is None and args.root is not None:
        raise UserError("--root is only used with --split; add --split NAME (e.g. --split val)")
    if args.split is not None:
        if args.root is None:
            raise UserError(f"--split {args.split} needs --root DIR, the data folder that holds "
                            "VOCdevkit/VOC2012 (e.g. --root data)")
        path = voc_folder(args.root) / "ImageSets" / "Segmentation" / f"{args.split}.txt"
        what = f"split list of --split {args.split}"
    else:
        if args.ids is None:
            return None
        path, what = Path(args.ids), "--ids file"
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{what} {path} lists no image ids")
    return ids


def _cmd_score(args: argparse.Namespace) -> int:
    from deconvnet.inference.score import score_folders
    from deconvnet.runtime.folders import ensure_writable

    # before reading every PNG: results.csv must be writable where it will go
    ensure_writable(args.out or args.pred, "--out" if args.out else "--pred (where results.csv goes)")

    score_folders(args.pred, args.gt, args.out, ids=_ids_to_score(args))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from deconvnet.data.synthetic import generate

    generate(args.root, num_images=args.images, seed=args.seed, size=args.size)
    return 0


def _cmd_proposals(args: argparse.Namespace) -> int:
    from deconvnet.data.proposals import precompute_from_config

    precompute_from_config(_config_and_overrides(args))
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from deconvnet.data.store import cache_from_config

    for reader in cache_from_config(_config_and_overrides(args)):
        print(f"{reader.split}: {len(reader)} images in {reader.paths.marker.parent}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from deconvnet.data.download import download, download_official

    if args.dataset.startswith("official"):
        download_official(args.dataset, args.root)
        return 0
    download(args.dataset, args.root)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    if args.proposals:
        from deconvnet.caffe.proposals import convert_edgebox_cache
        from deconvnet.data.voc import VOCSegmentationIndex

        if not args.data_root or not args.split:
            raise SystemExit("deconvnet convert --proposals: give --data-root and --split (image sizes)")
        out = convert_edgebox_cache(args.source, VOCSegmentationIndex(args.data_root, args.split), args.out)
        print(f"wrote {out}: use data.proposals.method=file data.proposals.file={out} "
              "data.proposals.extended=true data.square_windows=false")
        return 0
    from deconvnet.caffe import convert_caffemodel

    if not args.network:
        raise SystemExit("deconvnet convert: give --network deconvnet|fcn8s|vgg16 (or --proposals)")
    out = convert_caffemodel(args.source, args.network, args.out, bn=args.bn)
    if args.network == "vgg16":
        print(f"wrote {out}: use model.pretrained={out} model.weights_style=caffe")
    else:
        key = "deconvnet_checkpoint" if args.network == "deconvnet" else "fcn_checkpoint"
        print(f"wrote {out}: use eval.{key}={out}")
    return 0


def _cmd_windows_report(args: argparse.Namespace) -> int:
    from deconvnet.data.official import windows_report

    print(windows_report(_config_and_overrides(args), limit=args.limit))
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from deconvnet.pipeline import run_pipeline

    only = [s for s in args.steps.split(",") if s] if args.steps else None
    overrides = [*args.overrides, *(["data.check=full"] if args.full else [])]
    run_pipeline(args.experiment, overrides, only)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deconvnet",
        description="DeconvNet (Noh et al., ICCV 2015): training, ensemble evaluation, data tools.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("config", help="experiment YAML file")
        p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
        p.set_defaults(handler=handler)
        return p

    with_config("train", "train a network (DeconvNet stage 1/2 or FCN-8s)", _cmd_train)
    with_config("eval", "ensemble evaluation: Table 1 rows, CRF, server output", _cmd_eval)
    with_config("proposals", "precompute object proposals for a split", _cmd_proposals)
    p = with_config("windows-report", "our stage-1/2 windows beside the release's: classes, sizes, aspect ratios",
                    _cmd_windows_report)
    p.add_argument("--limit", type=int, default=None,
                   help="read at most this many official examples per list (labels are decoded)")
    with_config("cache", "decode the splits' images and masks into the store (data.cache_dir)", _cmd_cache)

    p = sub.add_parser("predict", help="label PNGs and overlays for arbitrary images")
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("rest", nargs="+", metavar="IMAGE|key=value", help="images, then overrides")
    p.add_argument("--out", default=None,
                   help="folder for the predictions (default: <output_dir>-predict, beside the config's)")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("score", help="per-class IoU of label PNGs against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--out", default=None, help="folder for results.csv (default: --pred)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--split", default=None,
                      help="score only this split's ids (e.g. val), listed under --root")
    only.add_argument("--ids", default=None, help="score only the ids in this file (one per line)")
    p.add_argument("--root", default=None,
                   help="with --split: the data folder holding VOCdevkit/VOC2012 (e.g. data)")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("synth", help="write a synthetic dataset in the VOC 2012 layout")
    p.add_argument("--root", required=True, help="folder to write VOCdevkit/VOC2012 into")
    p.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=None,
                   help="longer image side in pixels (default: VOC-like sizes, up to 500)")
    p.set_defaults(handler=_cmd_synth)

    from deconvnet.data.download import official_names

    p = sub.add_parser("download", help="download PASCAL VOC 2012, SBD, the Structured Edge model or the "
                       "official release (needs internet)")
    p.add_argument("dataset", choices=["voc2012", "sbd", "edge-model", *official_names()])
    p.add_argument("--root", required=True,
                   help="data folder (default layout: data/; the edge model: data/models; the release: data/official)")
    p.set_defaults(handler=_cmd_download)

    p = sub.add_parser("convert", help="a released Caffe model (or the cached EdgeBoxes) to our formats")
    p.add_argument("source", help="a .caffemodel, or with --proposals the folder of <id>.mat boxes")
    p.add_argument("--network", choices=["deconvnet", "fcn8s", "vgg16"], default=None)
    p.add_argument("--out", required=True, help="checkpoint (.ckpt), state dict (.pth) or boxes (.npz)")
    p.add_argument("--bn", choices=["inference", "learn"], default="inference",
                   help="DeconvNet BN layers: inference (folded, the released model) or learn (stage results)")
    p.add_argument("--proposals", action="store_true", help="convert the release's edgebox_cached .mat files")
    p.add_argument("--data-root", default=None, help="--proposals: data root holding VOCdevkit/VOC2012")
    p.add_argument("--split", default=None, help="--proposals: the split the .mat files belong to")
    p.set_defaults(handler=_cmd_convert)

    p = sub.add_parser("pipeline", help="run an experiment folder's steps in order, skipping done ones")
    p.add_argument("experiment", help="experiment folder, e.g. experiments/table1")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every step")
    p.add_argument("--steps", default=None,
                   help="comma-separated subset: data,proposals,stage1,stage2,fcn8s,eval,"
                        "stage1_trainval,stage2_trainval,fcn8s_trainval,test")
    p.add_argument("--full", action="store_true",
                   help="data step: decode every image and mask (data.check=full), not headers only")
    p.set_defaults(handler=_cmd_pipeline)
    return parser


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; key=value overrides may also follow an option (--steps a k=v)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills the overrides positional once, so overrides after an option come back
    # as unknown arguments: they belong at the end of the overrides, in their order.
    overrides_only = all("=" in a and not a.startswith("-") for a in extra)
    if extra and hasattr(args, "overrides") and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra and args.command == "predict":  # images and overrides after --out
        args.rest = [*args.rest, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# Lightning's INFO lines that tell the user nothing about their run: advertisements for
# its cloud products and an echo of a default the code passes explicitly.
_LIGHTNING_NOISE = ("💡 Tip:", "`Trainer(limit_val_batches=1.0)` was configured so 100%")


def _drop_lightning_noise(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_LIGHTNING_NOISE)


def _drop_sibling_termination(record: logging.LogRecord) -> bool:
    """torch's warning that it stops the other ddp_spawn processes once one has failed: the
    failure itself is what the user reads (one line for a UserError, a traceback otherwise)."""
    return not str(record.msg).startswith("Terminating process")


def _silence_third_party_noise() -> None:
    """Targeted filters for third-party output that is not about the run.

    Lightning logs its tips through its rank-zero logger (no setting turns them off), and
    Lightning 2.6's own ``_pytree`` uses torch's deprecated ``LeafSpec``, which torch reports
    as a FutureWarning on every fit; torch announces each ddp_spawn process it stops after
    another failed. Filters work in this process (and in workers that
    re-run the command, as torchrun's and Lightning's DDP launchers do).
    """
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if _drop_lightning_noise not in logger.filters:
            logger.addFilter(_drop_lightning_noise)
    spawn_logger = logging.getLogger("torch.multiprocessing.spawn")
    if _drop_sibling_termination not in spawn_logger.filters:
        spawn_logger.addFilter(_drop_sibling_termination)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
def _error(command: str, message: object) -> int:
    print(f"deconvnet {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from deconvnet.errors import UserError
    from deconvnet.runtime.log_setup import setup_logging

    args = _parse(argv)
    setup_logging()
    _silence_third_party_noise()
    try:
        return args.handler(args)
    except UserError as err:
        return _error(args.command, err)
    except KeyboardInterrupt:
        print(f"deconvnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in _FOLDER_ERRNOS:
            raise
        from deconvnet.runtime.folders import describe_os_error

        return _error(args.command, describe_os_error(err))


if __name__ == "__main__":
    sys.exit(main())
