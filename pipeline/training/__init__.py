"""Training DeepLabV3+ on a terraseg Zarr store: data, losses, metrics, schedule, loop, driver.

:func:`terraseg.pipeline.training.session.run_training` runs one process's share of a run
given its place in the process group and a tracker; ``terraseg.workflows.train_run``
starts the processes, joins the group and opens the MLflow tracker.
"""
