"""The `deconvnet` command: a thin dispatcher to the functions that do the work.

    deconvnet train CONFIG [key=value ...]
    deconvnet eval CONFIG [key=value ...]
    deconvnet predict CONFIG IMAGE... [key=value ...]
    deconvnet score --pred DIR --gt DIR [--out DIR]
    deconvnet synth --root DIR [--images N] [--seed S]
    deconvnet proposals CONFIG [key=value ...]
    deconvnet download voc2012|sbd --root DIR
    deconvnet pipeline EXPERIMENT_DIR [--steps a,b] [--full] [key=value ...]

Heavy imports (torch, lightning) happen inside each command so `--help` is instant.

Errors the user can fix (deconvnet.errors.UserError, also when another process raised it:
a DataLoader worker, a ddp_spawn rank) and file-system errors on output folders (full,
read-only, forbidden) are printed as one line, `deconvnet <cmd>: error: <message>`, with
exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import errno
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
    predict(load_config(args.config, overrides), images)
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from deconvnet.inference.score import score_folders
    from deconvnet.runtime.folders import ensure_writable

    # before reading every PNG: results.csv must be writable where it will go
    ensure_writable(args.out or args.pred, "--out" if args.out else "--pred (where results.csv goes)")

    score_folders(args.pred, args.gt, args.out)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from deconvnet.data.synthetic import generate

    generate(args.root, num_images=args.images, seed=args.seed, size=args.size)
    return 0


def _cmd_proposals(args: argparse.Namespace) -> int:
    from deconvnet.data.proposals import precompute_from_config

    precompute_from_config(_config_and_overrides(args))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from deconvnet.data.download import download

    download(args.dataset, args.root)
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

    p = sub.add_parser("predict", help="label PNGs and overlays for arbitrary images")
    p.add_argument("config", help="experiment YAML file")
    p.add_argument("rest", nargs="+", metavar="IMAGE|key=value", help="images, then overrides")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("score", help="per-class IoU of label PNGs against ground truth")
    p.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    p.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    p.add_argument("--out", default=None, help="folder for results.csv (default: --pred)")
    p.set_defaults(handler=_cmd_score)

    p = sub.add_parser("synth", help="write a synthetic dataset in the VOC 2012 layout")
    p.add_argument("--root", required=True, help="folder to write VOCdevkit/VOC2012 into")
    p.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=None,
                   help="longer image side in pixels (default: VOC-like sizes, up to 500)")
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser("download", help="download PASCAL VOC 2012 or SBD (needs internet)")
    p.add_argument("dataset", choices=["voc2012", "sbd"])
    p.add_argument("--root", required=True, help="data folder (default layout: data/)")
    p.set_defaults(handler=_cmd_download)

    p = sub.add_parser("pipeline", help="run an experiment folder's steps in order, skipping done ones")
    p.add_argument("experiment", help="experiment folder, e.g. experiments/table1")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides for every step")
    p.add_argument("--steps", default=None,
                   help="comma-separated subset: data,proposals,stage1,stage2,fcn8s,eval,test")
    p.add_argument("--full", action="store_true",
                   help="data step: decode every image and mask (data.check=full), not headers only")
    p.set_defaults(handler=_cmd_pipeline)
    return parser


def _error(command: str, message: object) -> int:
    print(f"deconvnet {command}: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from deconvnet.errors import UserError, from_other_process

    args = build_parser().parse_args(argv)
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
    except Exception as err:
        original = from_other_process(err)  # a ddp_spawn rank's UserError, as text
        if original is None:
            raise
        return _error(args.command, original)


if __name__ == "__main__":
    sys.exit(main())
