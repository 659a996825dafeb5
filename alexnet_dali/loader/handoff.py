"""The hand-off of DALI outputs to torch (part of the loader glue; imports DALI).

CPU outputs are shared through DLPack; host tensors bound for a CUDA device go through pinned
memory with `non_blocking=True`, so no step blocks the host on a copy (`transfer.host_to_device`).
"""

from __future__ import annotations

import ctypes
from typing import Sequence

import torch
from nvidia.dali import types
from nvidia.dali.plugin.pytorch.torch_utils import to_torch_type
from nvidia.dali.tensors import TensorListGPU

from alexnet_dali.config.schema import LoaderConfig
from alexnet_dali.errors import DataError
from alexnet_dali.loader.integrity import HELD_BACK
from alexnet_dali.loader.transfer import host_to_device
from alexnet_dali.tools.shards import LABEL_DIGITS


def copy_batch(batch, device: torch.device) -> torch.Tensor:
    """One DALI TensorList (uniform sample shape) → a torch tensor on `device`.

    GPU outputs are copied into a new tensor on torch's current stream. CPU outputs are shared
    through DLPack without a copy: DALI's dynamic executor (`exec_dynamic=True`) allocates every
    output anew and keeps it alive while torch references it (tests/test_loader.py checks that
    held batches survive later runs). A fresh 40 MB torch buffer per batch would instead cost
    more in page faults than the whole DALI graph on 2 cores. For a CUDA `device` (a CPU graph
    feeding a GPU model) they go through `host_to_device`.
    """
    if isinstance(batch, TensorListGPU):
        shape = [len(batch), *batch[0].shape()]
        out = torch.empty(shape, dtype=to_torch_type[batch.dtype], device=device)
        stream = types._raw_cuda_stream_ptr(torch.cuda.current_stream(device))
        batch.copy_to_external(ctypes.c_void_p(out.data_ptr()), stream, non_blocking=True)
        return out
    return host_to_device(torch.from_dlpack(batch.as_tensor()), device)


def images_to_torch(batch, loader: LoaderConfig, device: torch.device) -> torch.Tensor:
    """The graph's image batch → a torch tensor on `device`, cast/permuted per `loader`."""
    images = copy_batch(batch, device)
    wanted = getattr(torch, loader.dtype)
    if images.dtype != wanted:  # bfloat16 (DALI has none), float16 from a CPU graph
        images = images.to(wanted)
    if loader.layout == "NHWC":  # logically NCHW, channels_last in memory
        images = images.movedim(-1, -3)
    return images


DIGIT_WEIGHTS = 10 ** torch.arange(LABEL_DIGITS - 1, -1, -1)


def labels_from_digits(digits: torch.Tensor) -> torch.Tensor:
    """N×LABEL_DIGITS ASCII digits (uint8, the `.cls` members) → int64 class ids N.

    One vectorised step on the whole batch; the DALI graph hands the bytes over untouched.
    """
    if digits.shape[1:] != (LABEL_DIGITS,) or ((digits < 48) | (digits > 57)).any():
        raise DataError(f"a .cls member in this batch is not {LABEL_DIGITS} ASCII digits "
                           f"(batch shape {tuple(digits.shape)}); re-run `alexnet-dali preprocess`")
    return ((digits.long() - ord("0")) * DIGIT_WEIGHTS).sum(dim=1)


def labels_to_torch(digits, device: torch.device,
                    held_back: Sequence[int] = ()) -> torch.Tensor:
    """The graph's `.cls` digits (a CPU TensorList) → int64 labels N on `device`; the samples
    at `held_back` get the label HELD_BACK (set on the host, before the copy)."""
    if not digits.is_dense_tensor():
        raise DataError(f".cls members of different lengths in one batch; each must be "
                           f"{LABEL_DIGITS} ASCII digits: re-run `alexnet-dali preprocess`")
    labels = labels_from_digits(torch.from_dlpack(digits.as_tensor()))
    if held_back:
        labels[list(held_back)] = HELD_BACK
    return host_to_device(labels, device)


def to_torch(outputs, loader: LoaderConfig, device: torch.device,
             held_back: Sequence[int] = ()) -> list[torch.Tensor]:
    """DALI (images, `.cls` digits, *draws) → torch tensors on `device`: images per `loader`,
    int64 labels (HELD_BACK at `held_back`), the draws as they are."""
    return [images_to_torch(outputs[0], loader, device),
            labels_to_torch(outputs[1], device, held_back),
            *(copy_batch(o, device) for o in outputs[2:])]
