"""Two CPU processes (gloo): queues hold the global batch, retrieval negatives come from every rank."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: dict) -> None:
    from blip.tokenizer import build_tokenizer, tokenize
    from tests.support import CAPTIONS, tiny

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = tiny("filter")  # same seed on both ranks: same weights and same initial queues
        ids, mask = tokenize(build_tokenizer(), CAPTIONS[rank * 8:(rank + 1) * 8], 35)
        images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(rank))
        idx = torch.arange(8) + 8 * rank
        losses = model(images, ids, mask, alpha=0.4, idx=idx, negatives_all_ranks=True)
        sum(losses.values()).backward()
        out[rank] = {"ptr": int(model.queue_ptr), "queue": model.image_queue[:, :16].clone(),
                     "idx": model.idx_queue[0, :16].clone(),
                     "grad": model.visual_encoder.patch_embed.proj.weight.grad.abs().sum().item()}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_queues_gather_the_global_batch_and_negatives_span_ranks():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), out), nprocs=2, join=True)
        r0, r1 = out[0], out[1]
    assert r0["ptr"] == r1["ptr"] == 16  # the global batch (2 x 8) entered the queue
    assert torch.equal(r0["queue"], r1["queue"])
    assert r0["idx"].tolist() == list(range(16)) == r1["idx"].tolist()
    assert r0["grad"] > 0 and r1["grad"] > 0
