"""Weights & Biases for train, eval and predict: the mode, the run id kept across resumes,
and one function that builds the Lightning logger.

``logger.mode``:
- ``auto``: online when the user is logged in (``WANDB_API_KEY`` or a netrc entry for the W&B
  host, as ``wandb login`` writes), otherwise offline with a one-line notice; ``WANDB_MODE`` in
  the environment, when set, decides instead;
- ``online`` / ``offline``: as named; offline runs are kept under ``output_dir/wandb`` for
  ``wandb sync``;
- ``disabled``: no logger at all.

One W&B run per job: only global rank 0 creates it (``wandb.init`` here, handed to
``WandbLogger``; the other processes get Lightning's dummy experiment). The run id is stored
in ``output_dir/wandb_run_id.txt`` so that a resumed training continues the same W&B run.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig

from deconvnet.config import git_revision, to_dict
from deconvnet.runtime.atomic import write_text_atomic
from deconvnet.runtime.trainer_args import is_launcher_rank_zero

log = logging.getLogger(__name__)

LOGGER_MODES = ("auto", "online", "offline", "disabled")
RUN_ID_FILE = "wandb_run_id.txt"
DEFAULT_HOST = "https://api.wandb.ai"


def wandb_logged_in() -> bool:
    """Whether W&B credentials are available (environment or netrc), without network access."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).netloc
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc")).expanduser()
    try:
        return host != "" and netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """``logger.mode`` (one of LOGGER_MODES: the schema checks it) -> online | offline | disabled."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if wandb_logged_in() else "offline"


def run_id_for(output_dir: Path, resuming: bool) -> str:
    """The W&B run id of ``output_dir``: the stored one when resuming, else a new one (stored)."""
    stored = Path(output_dir) / RUN_ID_FILE
    if resuming and stored.is_file() and stored.read_text().strip():
        return stored.read_text().strip()
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    if is_launcher_rank_zero():
        write_text_atomic(stored, run_id + "\n")
    return run_id


def build_logger(cfg: DictConfig, output_dir: str | Path, job_type: str, resuming: bool = False,
                 extra_config: dict | None = None) -> Any:
    """The ``WandbLogger`` of a train / eval / predict run (None for ``logger.mode=disabled``).

    On global rank 0 the W&B run is started here (so call this just before the work, and
    :func:`finish_run` afterwards); ``resuming`` continues the run stored in ``output_dir``.
    """
    from lightning.pytorch.loggers import WandbLogger

    mode = resolve_mode(str(cfg.logger.mode))
    if mode == "disabled":
        return None
    output_dir = Path(output_dir)
    run_id = run_id_for(output_dir, resuming)
    settings = dict(name=str(cfg.name), project=str(cfg.logger.project), entity=cfg.logger.entity,
                    dir=str(output_dir), id=run_id, mode=mode, tags=list(cfg.logger.tags),
                    config={**to_dict(cfg), "git_revision": git_revision(), **(extra_config or {})},
                    job_type=job_type,
                    resume="allow")
    run = None
    if is_launcher_rank_zero():
        import wandb

        if mode == "offline":
            log.info("W&B: offline (not logged in); run %s is kept under %s, upload it later with "
                     "`wandb sync %s/offline-run-*`", run_id, output_dir / "wandb", output_dir / "wandb")
        run = wandb.init(**settings)
        run.define_metric("trainer/global_step")  # what WandbLogger does for runs it starts
        run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
    return WandbLogger(name=str(cfg.name), project=str(cfg.logger.project), save_dir=str(output_dir),
                       id=run_id, experiment=run, log_model=False)


def finish_run(logger: Any, failed: bool = False) -> None:
    """Close the W&B run this process started, if any."""
    if logger is None or not is_launcher_rank_zero():
        return
    import wandb

    run = logger.experiment
    if isinstance(run, wandb.sdk.wandb_run.Run):
        run.finish(exit_code=1 if failed else 0)
