"""The doctor's all-reduce worker, run by torchrun: `python -m torch.distributed.run
--nproc-per-node 2 -m alexnet_dali.doctor.allreduce --backend nccl` (gloo works on CPUs).

Nothing imports this module: it is a subprocess target, started by name (the string
"alexnet_dali.doctor.allreduce") by `gpu.two_process_all_reduce`, the nccl-all-reduce check.
Renaming it means renaming that string.

Each rank fills a float32 buffer with rank + 1 and all-reduces it (sum), checks every element,
then times 5 more all-reduces; rank 0 prints one JSON line with the result and the bus
bandwidth (NCCL's convention: bytes × 2(n-1)/n per second).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["nccl", "gloo"], default="nccl")
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if args.backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    count = args.megabytes * 2**20 // 4
    buffer = torch.full((count,), float(rank + 1), device=device)
    dist.all_reduce(buffer)
    expected = world * (world + 1) / 2
    correct = bool((buffer == expected).all().item())
    repeats = 5
    sync()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(buffer)
    sync()
    seconds = (time.perf_counter() - start) / repeats
    if rank == 0:
        bus = args.megabytes * 2**20 * 2 * (world - 1) / world / seconds / 1e9
        print(json.dumps({"backend": args.backend, "world_size": world, "correct": correct,
                          "megabytes": args.megabytes, "seconds": seconds, "bus_gb_s": bus}),
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
