"""Training: the LightningModules for DeconvNet and FCN-8s, the loss, the optimiser and its
schedules, callbacks (precise BN, non-finite guard, checkpoints, progress), atomic
checkpoints with resume, the W&B logger, and ``run.train(cfg)``.

Import the submodules directly (``from deconvnet.training.checkpoints import load_network``);
this package file stays empty so that the evaluator does not pull in Lightning's trainer.
"""
