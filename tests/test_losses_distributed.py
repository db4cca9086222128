"""Two-process (gloo, CPU) checks of SupCon feature gathering and CRL history sync.

The workers write their results to files; the parent compares them with single-process references.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from refcal_zoo.losses import CorrectnessHistory, SupConLoss, gather_features

SIZES = (4, 3)  # ranks contribute different batch sizes
WORLD = len(SIZES)


def _global_batch():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(sum(SIZES), 2, 6, generator=g, dtype=torch.float64), dim=-1)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3])
    return f, y


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        f, y = _global_batch()
        lo = sum(SIZES[:rank])
        local = f[lo : lo + SIZES[rank]].clone().requires_grad_()
        local_y = y[lo : lo + SIZES[rank]]
        gf, gy = gather_features(local, local_y)
        loss = SupConLoss(0.1, gather=True)(local, local_y)
        loss.backward()

        hist = CorrectnessHistory(10)
        idx = torch.tensor([0, 1, 2]) if rank == 0 else torch.tensor([3, 4])
        correct = torch.tensor([True, False, True]) if rank == 0 else torch.tensor([True, True])
        hist.update(idx, correct, sync=True)
        hist.update(torch.tensor([9]), torch.tensor([rank == 1]), sync=True)
        torch.save(
            {
                "loss": loss.detach(),
                "grad": local.grad,
                "gathered": gf.detach(),
                "labels": gy,
                "grad_fn": gf.requires_grad,
                "hist": hist.correct_count,
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo unavailable"
)
def test_two_process_gather_and_history_sync(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    f, y = _global_batch()
    full = f.clone().requires_grad_()
    ref_loss = SupConLoss(0.1)(full, y)
    ref_loss.backward()
    expected_hist = torch.zeros(10, dtype=torch.long)
    expected_hist[[0, 2, 3, 4, 9]] = 1
    for rank in range(WORLD):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        lo = sum(SIZES[:rank])
        assert torch.allclose(r["gathered"], f) and torch.equal(r["labels"], y)
        assert r["grad_fn"]
        assert abs(float(r["loss"]) - float(ref_loss.detach())) < 1e-12  # global loss on every rank
        # gradient reaches the local shard and equals the global-loss gradient w.r.t. that shard
        assert torch.allclose(r["grad"], full.grad[lo : lo + SIZES[rank]], atol=1e-12)
        assert torch.equal(r["hist"], expected_hist)  # identical history on both ranks
