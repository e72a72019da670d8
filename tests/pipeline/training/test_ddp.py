import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from terraseg.pipeline.errors import OutputExistsError
from terraseg.pipeline.training.checkpoint import load_checkpoint
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.loop import StepContext, train_step, wait_for_all
from terraseg.pipeline.training.losses import SegmentationLoss
from terraseg.pipeline.training.records import prepare_output
from terraseg.pipeline.training.tracker import NullTracker
from terraseg.workflows import train_run
from terraseg.workflows.train_run import free_port, init_distributed, launch, shutdown_distributed


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))


def _batch():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(4, 4, 8, 8, generator=generator)
    label = torch.randint(0, 3, (4, 8, 8), generator=generator)
    label[0, :6] = 255  # rank 0's half holds far more ignored pixels than rank 1's
    label[1, :, :3] = 255
    return image, label


def _step(model, batch, world, accumulate=1):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    ctx = StepContext(model, SegmentationLoss(3), optimizer, None, torch.device("cpu"), world=world)
    image, label = batch
    size = len(image) // accumulate
    parts = [(image[i : i + size], label[i : i + size]) for i in range(0, len(image), size)]
    return train_step(ctx, parts)


def _ddp_worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = _ddp_steps(rank)
        wait_for_all(2)
        if rank == 0:
            torch.save(results, out)
    finally:
        shutdown_distributed()


def _ddp_steps(rank):
    image, label = _batch()
    half = slice(2 * rank, 2 * rank + 2)
    results = {}
    for accumulate in (1, 2):
        model = DistributedDataParallel(_net())
        loss = _step(model, (image[half], label[half]), 2, accumulate)
        results[accumulate] = {"state": model.module.state_dict(), "loss": loss}
    return results


def test_two_process_ddp_step_equals_one_process_on_the_whole_batch(tmp_path):
    out = tmp_path / "ddp.pt"
    mp.spawn(_ddp_worker, args=(free_port(), str(out)), nprocs=2, join=True)
    results = torch.load(out, weights_only=True)
    image, label = _batch()
    # one process, the same global batch; with accumulation, micro-batch k of the global
    # batch is micro-batch k of every rank: samples (0, 2) then (1, 3)
    order = {1: [0, 1, 2, 3], 2: [0, 2, 1, 3]}
    for accumulate, result in results.items():
        single = _net()
        batch = (image[order[accumulate]], label[order[accumulate]])
        loss = _step(single, batch, 1, accumulate)
        assert abs(result["loss"] - loss) < 1e-6
        for key, value in single.state_dict().items():
            torch.testing.assert_close(result["state"][key], value, rtol=1e-5, atol=1e-6)
        assert not torch.equal(single.state_dict()["0.weight"], _net().state_dict()["0.weight"])


DDP_TINY = {
    "model": {"backbone": "mobilenetv2", "width_multiplier": 0.25},
    "data": {"crop_size": 32, "batch_size": 2, "samples_per_epoch": 8, "num_workers": 0},
    "epochs": 1,
    "overlays": 0,
    "devices": 2,
    "accelerator": "cpu",
}


@pytest.mark.slow  # two spawned ranks with loader workers: about 20 s
def test_devices_2_on_cpu_trains_through_the_elastic_launcher(store, tmp_path):
    config = TrainConfig.model_validate(DDP_TINY)
    out = tmp_path / "run"
    summary = launch(config, store, out, progress=False)
    assert summary["epochs"] == 1 and (out / "model" / "weights.pt").is_file()
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["val/pixel_accuracy"] >= 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2


def _join(rank, port):
    """Join a two-process gloo group the way torchrun's environment does."""
    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    return init_distributed("cpu")


def _prepare_worker(rank, port, root):
    root = Path(root)
    place = _join(rank, port)
    real_rmtree = shutil.rmtree

    def logged_rmtree(path, *args, **kwargs):  # rank 0 is slow: the others must wait
        with (root / "rmtree.log").open("a") as log:
            log.write(f"{rank}\n")
        time.sleep(1.0)
        real_rmtree(path, *args, **kwargs)

    shutil.rmtree = logged_rmtree
    seen = {}
    try:
        for name, overwrite in [("kept", False), ("removed", True)]:
            try:
                prepare_output(root / name, place, resume=False, overwrite=overwrite)
                seen[name] = "ready"
            except OutputExistsError:
                seen[name] = "refused"
            seen[f"{name} old file"] = (root / name / "checkpoints" / "last.pt").exists()
        (root / f"seen-{rank}.json").write_text(json.dumps(seen))
    finally:
        shutdown_distributed()


def test_rank_0_alone_removes_a_former_run_and_the_others_wait(tmp_path):
    for name in ("kept", "removed"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "checkpoints" / "last.pt").write_bytes(b"former run")
    mp.spawn(_prepare_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "rmtree.log").read_text() == "0\n"
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"seen-{rank}.json").read_text())
        # both ranks take rank 0's verdict; rank 1 returns only once the folder is gone
        assert seen == {"kept": "refused", "kept old file": True,
                        "removed": "ready", "removed old file": False}  # fmt: skip


class WaitsForRank1(NullTracker):
    """Rank 0's tracker: the model upload lasts until rank 1 has left the group."""

    def __init__(self, left):
        self.left, self.waited = left, None

    def log_model(self, artifact_dir):
        start = time.monotonic()
        while not self.left.exists() and time.monotonic() - start < 60:
            time.sleep(0.1)
        self.waited = time.monotonic() - start
        return "runs:/x/model" if self.left.exists() else None


def _finish_worker(rank, port, store, root):
    root = Path(root)
    _join(rank, port)
    tracker = WaitsForRank1(root / "rank-1-left") if rank == 0 else NullTracker()
    train_run.tracker_for_rank = lambda config, is_main, *args, **kwargs: nullcontext(tracker)
    config = TrainConfig.model_validate({**DDP_TINY, "devices": 1, "int8_calibration": 2})
    summary = launch(config, Path(store), root / "run", progress=False)  # the torchrun path
    if rank == 1:
        (root / "rank-1-left").write_text(json.dumps(summary))
    else:
        (root / "rank-0.json").write_text(json.dumps({**summary, "waited": tracker.waited}))


def test_other_ranks_leave_while_rank_0_exports_the_model(store, tmp_path):
    mp.spawn(_finish_worker, args=(free_port(), str(store), str(tmp_path)), nprocs=2, join=True)
    assert json.loads((tmp_path / "rank-1-left").read_text()) == {}
    summary = json.loads((tmp_path / "rank-0.json").read_text())
    # rank 1 left the group while rank 0 was still uploading: nobody waited on rank 0
    assert summary["model_uri"] == "runs:/x/model" and summary["waited"] < 60
    assert summary["epochs"] == 1 and (tmp_path / "run" / "model" / "weights.pt").is_file()
