"""``deconvnet eval CONFIG``: the ensemble evaluation of Table 1 from a config.

    deconvnet eval experiments/table1/eval.yaml [key=value ...]

Loads the networks named by ``eval.deconvnet_checkpoint`` / ``eval.fcn_checkpoint`` (either
may be left out: its rows are skipped; :func:`~deconvnet.inference.predictor.build_predictor`),
the cached proposals of ``eval.split``, and runs
:class:`~deconvnet.inference.ensemble.EnsembleEvaluator` through ``trainer.test`` on
``trainer.devices`` processes. With ``eval.probabilities_dir`` set (and
``save_probabilities=false``) it re-scores a score cache instead, without networks:
the way to sweep the CRF. Outputs: see :mod:`deconvnet.inference.outputs`.

The run folder (:mod:`deconvnet.runtime.run_folder`) is locked while the evaluation runs;
``config.yaml`` is written once the config is checked, the split opened and the checkpoints
accepted (a checkpoint trained on another dataset is refused); ``complete.json`` last, with
the data fingerprint and the identity of the checkpoints read (:func:`is_evaluated`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from deconvnet.config import ConfigError
from deconvnet.data.fingerprint import data_fingerprint, dataset_id
from deconvnet.errors import UserError, WeightsError
from deconvnet.inference.crf import crf_params
from deconvnet.inference.ensemble import EnsembleEvaluator
from deconvnet.inference.outputs import EvalOutputs, ScoreCache
from deconvnet.inference.predictor import ENSEMBLES, build_predictor, load_networks  # noqa: F401
from deconvnet.runtime.checkpoints import checkpoint_record
from deconvnet.runtime.folders import ensure_writable
from deconvnet.runtime.hardware import check_hardware
from deconvnet.runtime.run_folder import RunFolder, file_identity
from deconvnet.runtime.trainer_args import hardware_kwargs, is_launcher_rank_zero
from deconvnet.runtime.wandb_setup import build_logger, finish_run

log = logging.getLogger(__name__)


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


def _checkpoints(cfg: DictConfig) -> list[str]:
    if cfg.eval.probabilities_dir and not cfg.eval.save_probabilities:
        return []
    return [str(p) for p in (cfg.eval.deconvnet_checkpoint, cfg.eval.fcn_checkpoint) if p]


def _check_trained_on_this_data(cfg: DictConfig) -> None:
    """A checkpoint records the dataset it was trained on: refuse one from another dataset."""
    here = None
    for path in _checkpoints(cfg):
        trained_on = (checkpoint_record(path).get("data") or {}).get("root")
        if trained_on is None:
            continue  # a checkpoint from elsewhere: nothing recorded to compare
        here = here or dataset_id(cfg.data.root)
        if trained_on != here:
            raise WeightsError(
                f"{path} was trained on another dataset than data.root={cfg.data.root} (its split "
                "lists or images differ); evaluate on the data it was trained on, or retrain it on "
                "this data"
            )


def _record(cfg: DictConfig, reader=None) -> dict:
    """What ``complete.json`` of an evaluation holds besides the config: data and inputs."""
    split = str(cfg.eval.split)
    opened = {split: reader} if reader is not None else None
    inputs = _checkpoints(cfg) + ([str(cfg.eval.probabilities_dir)] if cfg.eval.probabilities_dir
                                  and not cfg.eval.save_probabilities else [])
    return {"data": data_fingerprint(cfg.data.root, [split], opened), "inputs": file_identity(inputs)}


def is_evaluated(cfg: DictConfig) -> bool:
    """Whether ``cfg.output_dir`` holds this evaluation, complete: same config, data and
    checkpoint files (the pipeline's question)."""
    folder = RunFolder(cfg.output_dir, "eval")
    if folder.completion() is None:
        return False
    try:
        record = _record(cfg)
    except (OSError, UserError):
        return False
    return folder.is_complete(cfg, data=record["data"], inputs=record["inputs"])


def _proposal_source(cfg: DictConfig) -> str | None:
    """Which proposals (and, for EdgeBoxes, which edges) DeconvNet's windows come from."""
    if not cfg.eval.deconvnet_checkpoint:
        return None
    from deconvnet.data.proposals.generators import edge_source

    return edge_source(cfg)


def _proposal_note(cfg: DictConfig) -> str:
    source = _proposal_source(cfg)
    return f"; DeconvNet proposals: {source}" if source else ""


def build_evaluator(cfg: DictConfig, has_labels: bool, reader=None) -> EnsembleEvaluator:
    """The evaluator ``cfg`` describes: networks (or a score cache), proposals, CRF, outputs.
    ``reader``: the split, already opened (its proposals are read for its ids)."""
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

    predictor = build_predictor(cfg)
    proposals = None
    if predictor.deconvnet is not None:
        from deconvnet.data.proposals import load_proposals

        top_k = int(cfg.data.proposals.top_k)
        if int(ev.num_proposals) > top_k:
            log.warning("eval.num_proposals=%s but the proposal cache keeps data.proposals.top_k=%s "
                        "per image; raise data.proposals.top_k to use more", ev.num_proposals, top_k)
        proposals = load_proposals(cfg, str(ev.split), reader=reader)
    return EnsembleEvaluator(predictor, proposals=proposals, **common)


def evaluate(cfg: DictConfig) -> dict[str, list[float]]:
    """Evaluate every Table 1 row the config allows; returns method -> [per-class IoU %, mean]
    (empty for an unlabelled split, which gets server archives instead)."""
    _check_eval_config(cfg)
    ensure_writable(cfg.output_dir, "output_dir")  # before any work: read-only, full, /proc/...
    folder = RunFolder(cfg.output_dir, "eval")
    if not is_launcher_rank_zero():  # torchrun/SLURM ranks > 0: rank 0 owns the folder
        return _evaluate(cfg, folder)
    with folder.lock():
        return _evaluate(cfg, folder)


def _evaluate(cfg: DictConfig, folder: RunFolder) -> dict[str, list[float]]:
    from deconvnet.data.datamodules import WholeImageDataModule

    owner = is_launcher_rank_zero()
    if owner:
        folder.remove_leftovers("overlays")
    folder.check_same_config(cfg)
    L.seed_everything(int(cfg.seed), verbose=False)
    datamodule = WholeImageDataModule(cfg)  # test_dataloader(): eval.split, each image once
    reader = datamodule.eval_dataset(str(cfg.eval.split)).reader  # the split, opened once
    _check_trained_on_this_data(cfg)
    evaluator = build_evaluator(cfg, bool(reader.has_labels), reader)
    record = _record(cfg, reader)

    # accepted: from here on the folder's records are this run's
    if owner:
        folder.mark_incomplete()
        folder.write_config(cfg)
    trainer = L.Trainer(
        **hardware_kwargs(cfg.trainer),
        logger=False,
        use_distributed_sampler=False,  # the loader's sampler already splits without padding
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(folder.path),
    )
    logger = build_logger(cfg, folder.path, job_type="eval",
                          extra_config={"proposal_source": _proposal_source(cfg)})
    if logger is not None:
        trainer.loggers = [logger]
    failed = True
    try:
        trainer.test(evaluator, datamodule=datamodule, verbose=False)
        failed = False
    finally:
        finish_run(logger, failed=failed)
    if owner:
        folder.mark_complete(cfg, data=record["data"], inputs=record["inputs"])
    return EnsembleEvaluator.rows_from(trainer) if reader.has_labels else {}
