"""The machinery of a side-by-side training run: the engine and its autograd twin trained on the same batches.

By concern:

* :mod:`side_by_side.settings`: the settings of a run (everything but the network) and ``TrainingError``.
* :mod:`side_by_side.run`: ``SideBySideRun`` (the coordinator) and ``train`` (lock, logger, run, summary).
* :mod:`side_by_side.loop`: the epoch loop and one training step of both models.
* :mod:`side_by_side.model_pair`, :mod:`side_by_side.batch_order`, :mod:`side_by_side.evaluation`: both models
  with their optimizers, which images each step sees, test and validation metrics.
* :mod:`side_by_side.checkpoint` (file format, atomic writes), :mod:`side_by_side.checkpoint_schema` (what a
  checkpoint must hold), :mod:`side_by_side.run_state` (what a run saves and restores).
* :mod:`side_by_side.run_directory`: one process per run directory, orphan cleanup.
* :mod:`side_by_side.signals`: Ctrl-C and SIGTERM stop a run after its step.
* :mod:`side_by_side.tensorboard_writer`, :mod:`side_by_side.tensorboard_layout`, :mod:`side_by_side.digit_tiles`,
  :mod:`side_by_side.guarded_logger`: TensorBoard (what is written, how it is laid out, images, write failures).
* :mod:`side_by_side.run_report`: the per-epoch line and the summary of a run.
* :mod:`side_by_side.process_group`: the process group of a data-parallel run.
* :mod:`side_by_side.memory_estimate`, :mod:`side_by_side.training_parity`: memory needed; N-step parity.

It sits above ``torch_reference`` (the twin and the comparison) and ``manual_backprop`` (the engine), and
below ``experiments`` (the command lines); nothing below imports it.
"""
