"""``deconvnet eval CONFIG``: the ensemble evaluation of Table 1 from a config.

    deconvnet eval experiments/table1/eval.yaml [key=value ...]

Loads the networks named by ``eval.deconvnet_checkpoint`` / ``eval.fcn_checkpoint`` (either
may be left out: its rows are skipped), the cached proposals of ``eval.split``, and runs
:class:`~deconvnet.inference.ensemble.EnsembleEvaluator` through ``trainer.test`` on
``trainer.devices`` processes. With ``eval.probabilities_dir`` set (and
``save_probabilities=false``) it re-scores a score cache instead, without networks:
the way to sweep the CRF. Outputs: see :mod:`deconvnet.inference.outputs`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from torch import nn

from deconvnet.config import ConfigError, save_config
from deconvnet.errors import DataError, WeightsError
from deconvnet.inference.crf import crf_params
from deconvnet.inference.ensemble import EnsembleEvaluator
from deconvnet.inference.outputs import EvalOutputs, ScoreCache
from deconvnet.inference.predictor import (
    EnsemblePredictor,
    predictor_window_params,
    with_normalizer,
)
from deconvnet.metrics import read_results_csv
from deconvnet.runtime.folders import ensure_writable
from deconvnet.runtime.hardware import check_hardware
from deconvnet.training.run import hardware_kwargs


def _check_eval_config(cfg: DictConfig) -> None:
    """What the schema (load_config) cannot check: the hardware and the checkpoints."""
    ev = cfg.eval
    check_hardware(cfg.trainer)
    if ev.probabilities_dir and not ev.save_probabilities:
        return  # CRF-only run from a cache: no networks needed
    if not ev.deconvnet_checkpoint and not ev.fcn_checkpoint:
        raise ConfigError(
            "nothing to evaluate: set eval.deconvnet_checkpoint (the stage-2 final.ckpt) and/or "
            "eval.fcn_checkpoint (the FCN-8s final.ckpt), or eval.probabilities_dir to re-score a "
            "score cache"
        )
    for key in ("deconvnet_checkpoint", "fcn_checkpoint"):
        path = ev[key]
        if path and not Path(path).is_file():
            raise WeightsError(
                f"eval.{key}={path}: no such checkpoint. Train that network first (make "
                "train-stage2 / make train-fcn write outputs/<name>/checkpoints/final.ckpt), fix "
                f"the path, or set eval.{key}=null to skip its rows"
            )


def load_networks(cfg: DictConfig) -> tuple[nn.Module | None, nn.Module | None, dict]:
    """(DeconvNet, FCN-8s, DeconvNet's model section): each wrapped with its input
    normalisation, None when its checkpoint is not set."""
    from deconvnet.training.checkpoints import load_network

    expect_classes = int(cfg.model.num_classes)
    deconvnet = fcn = None
    deconv_model: dict = {}
    if cfg.eval.deconvnet_checkpoint:
        net = load_network(cfg.eval.deconvnet_checkpoint,
                           expect={"name": "deconvnet", "num_classes": expect_classes})
        deconv_model = dict(net.model_config)
        deconvnet = with_normalizer(net, deconv_model.get("weights_style", "torchvision"))
    if cfg.eval.fcn_checkpoint:
        net = load_network(cfg.eval.fcn_checkpoint, expect={"name": "fcn8s", "num_classes": expect_classes})
        fcn = with_normalizer(net, dict(net.model_config).get("weights_style", "torchvision"))
    if cfg.trainer.channels_last:
        import torch

        for net in (deconvnet, fcn):
            if net is not None:
                net.to(memory_format=torch.channels_last)
    return deconvnet, fcn, deconv_model


def _eval_logger(cfg: DictConfig, output_dir: Path):
    """A W&B logger for the evaluation (offline when not logged in; None when disabled)."""
    from lightning.pytorch.loggers import WandbLogger

    from deconvnet.config import git_revision, to_dict
    from deconvnet.training.wandb_logger import resolve_mode, run_id_for

    mode = resolve_mode(str(cfg.logger.mode))
    if mode == "disabled":
        return None
    return WandbLogger(
        name=str(cfg.name), project=str(cfg.logger.project), entity=cfg.logger.entity,
        save_dir=str(output_dir), id=run_id_for(output_dir, resuming=False), mode=mode,
        tags=list(cfg.logger.tags),
        config={**to_dict(cfg), "git_revision": git_revision(), "proposal_source": _proposal_source(cfg)},
        job_type="eval", log_model=False,
    )


def _proposal_source(cfg: DictConfig) -> str | None:
    """Which proposals (and, for EdgeBoxes, which edges) DeconvNet's windows come from."""
    if not cfg.eval.deconvnet_checkpoint:
        return None
    from deconvnet.data.proposals.generators import edge_source

    return edge_source(cfg)


def _proposal_note(cfg: DictConfig) -> str:
    source = _proposal_source(cfg)
    return f"; DeconvNet proposals: {source}" if source else ""


def build_evaluator(cfg: DictConfig, has_labels: bool) -> EnsembleEvaluator:
    """The evaluator ``cfg`` describes: networks (or a score cache), proposals, CRF, outputs."""
    ev = cfg.eval
    output_dir = Path(cfg.output_dir)
    crf = crf_params(cfg.crf) if cfg.crf.enabled else None
    cache_dir = ev.probabilities_dir or str(output_dir / "probabilities")
    outputs = EvalOutputs(
        output_dir, num_classes=int(cfg.model.num_classes),
        write_predictions=bool(ev.write_predictions) or not has_labels,
        overlays=int(cfg.logger.log_images),
        probabilities_dir=cache_dir if ev.save_probabilities else None,
        title=f"{cfg.name}: per-class IoU (%) on {cfg.data.root} split '{ev.split}'" + _proposal_note(cfg),
    )
    common = dict(num_classes=int(cfg.model.num_classes), crf=crf, crf_workers=int(cfg.crf.workers),
                  outputs=outputs, has_labels=has_labels)
    if ev.probabilities_dir and not ev.save_probabilities:
        return EnsembleEvaluator(None, cache=ScoreCache(ev.probabilities_dir), ensemble=str(ev.ensemble),
                                 **common)

    deconvnet, fcn, deconv_model = load_networks(cfg)
    proposals = None
    if deconvnet is not None:
        from deconvnet.data.proposals import load_proposals

        top_k = int(cfg.data.proposals.top_k)
        if int(ev.num_proposals) > top_k:
            print(f"note: eval.num_proposals={ev.num_proposals} but the proposal cache keeps "
                  f"data.proposals.top_k={top_k} per image; raise data.proposals.top_k to use more")
        proposals = load_proposals(cfg, str(ev.split))
    predictor = EnsemblePredictor(
        deconvnet, fcn,
        input_size=int(deconv_model.get("input_size", cfg.model.input_size)),
        num_proposals=int(ev.num_proposals), aggregation=str(ev.aggregation),
        ensemble=str(ev.ensemble), proposal_batch_size=int(ev.proposal_batch_size),
        **predictor_window_params(cfg.data),
    )
    return EnsembleEvaluator(predictor, proposals=proposals, **common)


def evaluate(cfg: DictConfig) -> dict[str, list[float]]:
    """Evaluate every Table 1 row the config allows; returns method -> [per-class IoU %, mean]
    (empty for an unlabelled split, which gets server archives instead)."""
    from deconvnet.data.datamodules import WholeImageDataModule, open_split
    from deconvnet.training.wandb_logger import finish_run

    _check_eval_config(cfg)
    output_dir = ensure_writable(cfg.output_dir, "output_dir")  # before any work
    save_config(cfg, output_dir)
    L.seed_everything(int(cfg.seed), verbose=False)

    split = str(cfg.eval.split)
    has_labels = bool(open_split(cfg, split).has_labels)
    evaluator = build_evaluator(cfg, has_labels)
    datamodule = WholeImageDataModule(cfg)  # test_dataloader(): eval.split, each image once
    logger = _eval_logger(cfg, output_dir)
    trainer = L.Trainer(
        **hardware_kwargs(cfg.trainer),
        logger=logger if logger is not None else False,
        use_distributed_sampler=False,  # the loader's sampler already splits without padding
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(output_dir),
    )
    failed = True
    try:
        trainer.test(evaluator, datamodule=datamodule, verbose=False)
        failed = False
    finally:
        finish_run(logger, failed=failed)
    results = output_dir / "results.csv"
    if not has_labels:
        return {}
    if not results.is_file():
        raise DataError(f"the evaluation finished without writing {results}")
    return read_results_csv(results)

