"""The `deconvnet` command: a thin dispatcher to the functions that do the work.

    deconvnet train CONFIG [key=value ...]
    deconvnet eval CONFIG [key=value ...]
    deconvnet predict CONFIG IMAGE... [key=value ...] [--out DIR]
    deconvnet score --pred DIR --gt DIR [--out DIR]
    deconvnet synth --root DIR [--images N] [--seed S]
    deconvnet proposals CONFIG [key=value ...]
    deconvnet download voc2012|sbd --root DIR
    deconvnet pipeline EXPERIMENT_DIR [--steps a,b] [key=value ...]

Heavy imports (torch, lightning) happen inside each command so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys


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


def _cmd_score(args: argparse.Namespace) -> int:
    from deconvnet.inference.score import score_folders

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
    run_pipeline(args.experiment, args.overrides, only)
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
    p.add_argument("--out", default=None,
                   help="folder for the predictions (default: <output_dir>-predict, beside the config's)")
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
    p.set_defaults(handler=_cmd_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    from deconvnet.errors import UserError
    from deconvnet.runtime.log_setup import setup_logging

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "predict":  # images and overrides after --out
        args.rest += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging()
    try:
        return args.handler(args)
    except UserError as err:
        print(f"deconvnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deconvnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
