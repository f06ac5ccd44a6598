"""Where and how stage 1 runs: device, precision, memory format, loader workers, distributed rank."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.distributed as dist

from foldstack.stage1.config import OofConfig


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    num_workers: int
    rank: int = 0
    world: int = 1
    progress: bool = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict:
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {
            "device": name,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            "channels_last": self.channels_last,
            "num_workers": self.num_workers,
            "world_size": self.world,
            "torch_threads": torch.get_num_threads(),
        }


def init_distributed() -> tuple[int, int]:
    """(rank, world) from torchrun's environment; initialises the process group when world > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return rank, world


def make_runtime(cfg: OofConfig, progress: bool = True) -> Runtime:
    # OpenCV's thread pool in a process that later forks DataLoader workers can deadlock them; this
    # process never needs it (images are decoded by the cache's pool or in the loader workers)
    cv2.setNumThreads(1)
    rank, world = init_distributed()
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    amp = cfg.train.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    if device.type == "cpu":
        amp_dtype = None  # CPU autocast is slower than fp32 for these convnets
    cl = cfg.train.channels_last
    channels_last = device.type == "cuda" if cl == "auto" else bool(cl)
    workers = cfg.data.num_workers
    if workers == "auto":
        cpus = len(os.sched_getaffinity(0))
        workers = min(8, max(cpus // max(world, 1) - 1, 1)) if device.type == "cuda" else 0
    return Runtime(device, amp_dtype, channels_last, int(workers), rank, world, progress and rank == 0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def gather_objects(obj: object, rt: Runtime) -> list:
    """Every rank's object, in rank order (just [obj] without distribution)."""
    if rt.world == 1:
        return [obj]
    out: list = [None] * rt.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, rt: Runtime) -> object:
    """The main rank's `obj` on every rank."""
    if rt.world == 1:
        return obj
    box = [obj if rt.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()
