"""Training DeepLabV3+ on a terraseg Zarr store: data, losses, metrics, schedule, loop.

Everything here runs in one process; ``workflows.train_run`` adds the distributed
set-up, the output folder and the tracker.
"""
