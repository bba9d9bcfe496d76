"""Training: the LightningModules for DeconvNet and FCN-8s, the loss, the optimiser and its
schedules, callbacks (precise BN, non-finite guard, checkpoints, progress), checkpoints with
exact resume, and ``run.train(cfg)``. What evaluation shares with training (trainer
arguments, W&B, checkpoint reading, the run folder) is in :mod:`deconvnet.runtime`.

Import the submodules directly (``from deconvnet.training.checkpoints import load_network``);
this package file stays empty so that the evaluator does not pull in Lightning's trainer.
"""
