import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.training.checkpoint import load_checkpoint
from pipeline.training.config import TrainConfig
from pipeline.training.loop import StepContext, train_step
from pipeline.training.losses import SegmentationLoss
from workflows.train_run import free_port, launch, shutdown_distributed


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
    finished = False
    try:
        results = _ddp_steps(rank)
        if rank == 0:
            torch.save(results, out)
        finished = True
    finally:
        shutdown_distributed(finished)


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


def test_devices_2_on_cpu_trains_through_the_elastic_launcher(store, tmp_path):
    config = TrainConfig.model_validate(
        {
            "model": {"backbone": "mobilenetv2", "width_multiplier": 0.25},
            "data": {"crop_size": 32, "batch_size": 2, "samples_per_epoch": 8, "num_workers": 0},
            "epochs": 1,
            "overlays": 0,
            "devices": 2,
            "accelerator": "cpu",
        }
    )
    out = tmp_path / "run"
    summary = launch(config, store, out, progress=False)
    assert summary["epochs"] == 1 and (out / "model" / "weights.pt").is_file()
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["val/pixel_accuracy"] >= 0
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
