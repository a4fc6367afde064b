"""Data-parallel training with torch.distributed (docs/DISTRIBUTED.md): one process per rank, started by torchrun.

Every rank trains on its slice of the one-process global batch and the loss is computed over the whole global
batch, so W processes follow the trajectory of one process with the same ``batch_size`` (up to float rounding):

* **Shards.** Every rank draws the same epoch plan (``trainer.epoch_plan``); rank r takes the r-th contiguous
  slice of each batch (``np.array_split``: uneven when the batch does not divide, possibly empty).
* **Global similarity.** Each rank encodes its shard, then the audio embeddings, the text embeddings, the MoE
  weights and the availability flags of all ranks are gathered *with gradient* (:class:`_GatherRows`), and every
  rank builds the full ``(B, B)`` sims matrix and the max-margin loss over it, exactly as one process does.
* **Synchronised BatchNorm.** :class:`GlobalBatchNorm` normalises with the statistics of the global batch in
  training mode (all-reduced sums, differentiable), on CPU/gloo as on CUDA/NCCL (``torch.nn.SyncBatchNorm``
  refuses CPU tensors). In eval mode it is the plain BatchNorm on the running statistics, which are the same on
  every rank.
* **Gradients.** Every rank computes the same loss L. Backward through the gathers and the BN reductions sums
  the gradients of all ranks (the gradient of the sum of the W identical losses), so after summing the parameter
  gradients over ranks and dividing by W (:meth:`DistContext.sync_gradients`) each rank holds dL/dθ of the
  one-process step, and the identical optimizer steps keep the replicas identical.
* **Writes.** Rank 0 creates the run folder and writes the log, checkpoints, sims and metrics; the other ranks
  write nothing and skip the final evaluation. Every rank validates (cheap, identical) so the loop stays the same.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from utils.config import first_difference
from utils.errors import UserError, os_error_message

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# ---------------------------------------------------------------------------------------------- process group
def launched_by_torchrun() -> bool:
    return all(k in os.environ for k in ENV_KEYS)


def init_distributed(device: torch.device, timeout_min: float = 30.0) -> torch.device:
    """Join the process group when started by torchrun (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set); returns the
    device of this rank. CPU -> gloo; CUDA -> NCCL on ``cuda:LOCAL_RANK``. Without torchrun: ``device`` unchanged."""
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    try:
        rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    except ValueError:
        raise UserError(f"torchrun environment: {[os.environ[k] for k in ENV_KEYS]}: not integers") from None
    timeout = datetime.timedelta(minutes=timeout_min)
    if device.type == "cuda":
        n_gpu = torch.cuda.device_count()
        if device.index is not None and device.index != local:
            raise UserError(f"--device {device.index}: under torchrun each rank uses cuda:LOCAL_RANK; "
                            "use --device cuda")
        if local >= n_gpu:
            raise UserError(f"torchrun: LOCAL_RANK {local} but only {n_gpu} CUDA device(s) visible (NCCL needs one "
                            "GPU per rank: --nproc_per_node <= GPUs per node, or --device cpu for gloo)")
        device = torch.device(f"cuda:{local}")
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=rank, world_size=world, timeout=timeout, device_id=device)
    elif device.type == "cpu":
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    else:
        raise UserError(f"--device {device}: distributed training supports cpu (gloo) and cuda (NCCL)")
    return device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------- autograd collectives
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; backward sums the incoming gradients over ranks (d(sum_r L_r)/dx_r)."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


class _GatherRows(torch.autograd.Function):
    """Concatenate the rows of every rank in rank order (``sizes[r]`` rows from rank r, possibly uneven or zero).

    Forward: all_gather of the shards padded to the largest one. Backward: the gradient w.r.t. the full matrix
    is summed over ranks and this rank keeps its own rows (the local shard keeps its autograd graph)."""

    @staticmethod
    def forward(ctx, x, sizes, rank):
        if x.shape[0] != sizes[rank]:
            raise RuntimeError(f"rank {rank}: {x.shape[0]} rows, expected {sizes[rank]}")
        x = x.contiguous()
        longest = max(sizes)
        if x.shape[0] < longest:
            x = torch.cat([x, x.new_zeros((longest - x.shape[0],) + tuple(x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(parts, x)
        ctx.sizes, ctx.rank = sizes, rank
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def gather_rows(x: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
    return _GatherRows.apply(x, sizes, rank)


# ---------------------------------------------------------------------------------------------- synchronised BN
class GlobalBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d whose training-mode statistics are those of the global batch (all ranks).

    Same parameters, buffers and state-dict keys as ``nn.BatchNorm1d`` (checkpoints load either way). Mean and
    variance are two-pass (sum, then sum of squared deviations from the global mean), computed in float64 and
    all-reduced with gradient. Eval mode, or no process group: exactly ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xd = x.double()  # statistics in float64, as the CPU BatchNorm kernel accumulates them
        n_local = float(x.numel() // x.shape[1]) if x.shape[1] else 0.0
        sums = _AllReduceSum.apply(torch.cat([xd.sum(dims), xd.new_full((1,), n_local)]))
        count = float(sums[-1].detach())
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(count)} (global)")
        mean = sums[:-1] / count
        var = _AllReduceSum.apply((xd - mean.reshape(shape)).square().sum(dims)) / count
        compute = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        y = (x.to(compute) - mean.to(compute).reshape(shape)) * torch.rsqrt(var + self.eps).to(compute).reshape(shape)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - f).add_(mean.detach().to(self.running_mean.dtype), alpha=f)
                unbiased = var.detach() * (count / (count - 1))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every ``nn.BatchNorm1d`` into a :class:`GlobalBatchNorm` in place (same parameter objects)."""
    for m in module.modules():
        if type(m) is nn.BatchNorm1d:
            m.__class__ = GlobalBatchNorm  # a subclass with no extra state: parameters and buffers stay as they are
    return module


# ---------------------------------------------------------------------------------------------- context
@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; ``DistContext(0, 1)`` (one process) turns every hook into a no-op."""
    rank: int = 0
    world_size: int = 1
    active: bool = False  # a process group is initialised (also with world size 1, e.g. NCCL on one GPU)

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    # -- setup
    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Global-batch BatchNorm and rank 0's initial weights on every rank (they are equal already: same seed)."""
        if not self.active:
            return model
        convert_batchnorm(model)
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(t.data, 0)
        return model

    @contextlib.contextmanager
    def together(self, identity: Callable[[], Any] | None = None) -> Iterator[None]:
        """A phase in which each rank checks and reads files on its own, settled by all ranks at its end.

        An input error (``UserError``/``OSError``) of any rank is raised on every rank, with the message of the
        first rank that had one; then every rank's ``identity()`` (its config, its archive) must equal rank 0's.
        Before, a bad file on one node, or rank 0's run-folder lock, stopped that rank alone, while the others
        waited in their next collective until torchrun killed them with a traceback; and a rank started with
        another config (another ``--custom_args`` on one node) trained on with the others' averaged gradients and
        the run ended with exit 0. One process: the block runs unchanged."""
        failure = None
        try:
            yield
        except (UserError, OSError) as err:
            if not self.active:
                raise
            failure = err
        if not self.active:
            return
        if failure is None:
            mine = (None, identity() if identity is not None else None)
        else:
            mine = (str(failure) if isinstance(failure, UserError) else os_error_message(failure), None)
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        if failure is not None:
            raise failure  # this rank's own error, as in one process
        for rank, (message, _) in enumerate(everyone):
            if message is not None:
                raise UserError(message if rank == 0 else f"rank {rank}: {message}")
        for rank, (_, other) in enumerate(everyone[1:], start=1):
            if other != everyone[0][1]:
                key, ref, got = first_difference(everyone[0][1], other)
                raise UserError(f"distributed: rank {rank} was started for another run than rank 0 ({key}: rank 0 "
                                f"has {ref!r}, rank {rank} has {got!r}); every rank must run the same train.py "
                                "command on the same data")

    def share_path(self, path: Path | None) -> Path:
        """Rank 0's value of ``path`` (e.g. the run folder it just created) on every rank."""
        if not self.active:
            return path
        box = [str(path) if self.is_writer else None]
        dist.broadcast_object_list(box, 0)
        return Path(box[0])

    # -- per step
    def shard(self, idx: np.ndarray, caps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This rank's contiguous slice of a global batch."""
        if not self.active:
            return idx, caps
        start, stop = _bounds(len(idx), self.world_size)[self.rank]
        return idx[start:stop], caps[start:stop]

    def sims(self, model: nn.Module, experts: dict[str, torch.Tensor], ind: dict[str, torch.Tensor],
             text: torch.Tensor, text_lens: torch.Tensor | None) -> torch.Tensor:
        """``model(experts, ind, text, text_lens)`` over the global batch: (B, B) on every rank, built from the
        gathered embeddings of the shards (rows and columns in one-process order)."""
        if not self.active:
            return model(experts, ind, text, text_lens)
        mods = model.modalities
        audio = model.encode_audio(experts, ind)
        text_emb, weights = model.encode_text(text, text_lens)
        n_local = next(iter(audio.values())).shape[0]
        counts = [torch.zeros(1, dtype=torch.long, device=weights.device) for _ in range(self.world_size)]
        dist.all_gather(counts, torch.tensor([n_local], dtype=torch.long, device=weights.device))
        sizes = [int(c) for c in counts]
        g = lambda t: gather_rows(t, sizes, self.rank)  # noqa: E731
        avail = torch.stack([ind[m].to(weights.device, torch.float32) for m in mods], dim=1)
        avail = g(avail) > 0.5
        ind_all = {m: avail[:, i] for i, m in enumerate(mods)}
        return model.similarity(({m: g(text_emb[m]) for m in mods}, g(weights)),
                                {m: g(audio[m]) for m in mods}, ind_all)

    def sync_gradients(self, model: nn.Module) -> None:
        """Sum the parameter gradients over ranks and divide by W (= the one-process gradient, see module doc)."""
        if not self.active:
            return
        groups: dict[tuple, list[nn.Parameter]] = {}
        for p in model.parameters():
            if p.grad is not None:
                groups.setdefault((p.grad.dtype, p.grad.device), []).append(p)
        for params in groups.values():
            # One flat copy per dtype/device: autograd may hand two parameters the same gradient tensor (e.g. the
            # biases of two BatchNorms whose outputs are added, with one row on this rank), so reducing the
            # .grad tensors in place would reduce that storage twice.
            flat = torch.cat([p.grad.reshape(-1) for p in params])
            dist.all_reduce(flat)
            if self.world_size > 1:
                flat.div_(self.world_size)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p)

    def check_replicas(self, state: dict[str, torch.Tensor], rtol: float = 1e-6) -> None:
        """Raise if this rank's weights or BN statistics drifted from rank 0's. They stay bit-identical by
        construction (identical reduced gradients and statistics); per-rank randomness, e.g. dropout, would break
        that silently, so it is checked before each checkpoint write and before the final evaluation (two float64
        sums per tensor; with the default save_period of 10, the last 10 of 20 epochs went unchecked before)."""
        sums = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for t in state.values()])
        everyone = [torch.empty_like(sums) for _ in range(self.world_size)]
        dist.all_gather(everyone, sums)
        ref = everyone[0]
        for rank, other in enumerate(everyone[1:], start=1):
            bad = ~torch.isclose(other, ref, rtol=rtol, atol=0, equal_nan=True)
            if bool(bad.any()):
                name = list(state)[int(bad.any(dim=1).nonzero()[0])]
                raise RuntimeError(f"distributed: rank {rank}'s {name} differs from rank 0's (the replicas drifted)")

    # -- writes
    def save_checkpoint(self, path, payload: dict[str, Any]) -> None:
        """Rank 0 writes (every rank holds the same state); no rank goes on before the file is in place."""
        if self.active:
            self.check_replicas(payload["model"])
        if self.is_writer:
            from trainer.checkpoint import save_checkpoint
            save_checkpoint(path, payload)
        if self.active:
            dist.barrier()


def _bounds(n: int, world: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's slice of n rows: the first n % world ranks hold one row more."""
    edges = np.cumsum([0] + [len(a) for a in np.array_split(np.arange(n), world)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def current_context() -> DistContext:
    """The context of the initialised process group, or the one-process context."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), True)
    return DistContext()
