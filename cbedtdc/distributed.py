"""Process-group start-up for one training job: one process, MPI ranks or torchrun.

How the rank is found, in this order:

1. torchrun-style environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``):
   ``init_method="env://"``.
2. An MPI launcher (``mpiexec``/``srun``/``jsrun`` set ``PMI_RANK``, ``OMPI_COMM_WORLD_RANK``,
   ``PMIX_RANK``, ``SLURM_PROCID`` or ``JSM_NAMESPACE_RANK``): mpi4py gives rank and size; rank 0 owns
   a ``TCPStore`` on a port the OS picks (``wait_for_workers=False``: with ``True`` rank 0 would wait
   for workers that are themselves waiting for the port, a deadlock) and broadcasts address and port.
3. Neither: one process, no process group.

MPI only bootstraps: gradients travel over gloo on CPU and NCCL on GPU (one GPU per local rank),
because the PyPI torch builds have no MPI backend. Every collective carries ``timeout_s``, so a rank
that dies makes the others fail with an error instead of hanging; :func:`abort_job` ends the whole
MPI job at once when a rank raises.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
from dataclasses import dataclass, field

__all__ = ["DistContext", "init_distributed", "launcher_env", "abort_job", "local_rank_from_env"]

log = logging.getLogger(__name__)

#: Environment variables by which MPI launchers announce a rank (MPICH/Hydra, Open MPI, PMIx, SLURM, LSF jsrun).
MPI_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
#: Rank counts set by a launcher for the processes it starts (never inherited from a batch script).
MPI_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "JSM_NAMESPACE_SIZE")
LOCAL_RANK_VARS = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID",
                   "JSM_NAMESPACE_LOCAL_RANK", "PMI_LOCAL_RANK")


@dataclass
class DistContext:
    """Where this process stands in the job.

    Attributes
    ----------
    rank, world_size, local_rank : int
        Global rank, number of ranks, rank on this node.
    device : str
        ``"cpu"`` or ``"cuda:<i>"``.
    backend : str or None
        ``"gloo"``, ``"nccl"`` or None (one process, no process group).
    launcher : str
        ``"single"``, ``"mpi"`` or ``"torchrun"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None
    launcher: str = "single"
    timeout_s: float = 600.0
    _comm: object = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def barrier(self) -> None:
        """Meet all ranks (bounded by the process group's timeout)."""
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[int(self.device.split(":")[1])])
            else:
                dist.barrier()

    def all_gather_object(self, obj) -> list:
        """Pickle-able object of every rank, in rank order (``[obj]`` in one process)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj, src: int = 0):
        """``obj`` of rank ``src`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of floats over ranks (float64)."""
        if not self.distributed:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.cpu().tolist()

    def shutdown(self) -> None:
        """Destroy the process group (after a final barrier) if there is one."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.backend = None


def launcher_env(env=None) -> str:
    """Which launcher started this process: ``"torchrun"``, ``"mpi"`` or ``"single"``.

    >>> launcher_env({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    'torchrun'
    >>> launcher_env({"PMI_RANK": "1", "PMI_SIZE": "2"})
    'mpi'
    >>> launcher_env({})
    'single'
    """
    env = os.environ if env is None else env
    if all(k in env for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return "torchrun"
    if any(k in env for k in MPI_RANK_VARS):
        return "mpi"
    return "single"


def local_rank_from_env(env=None) -> int | None:
    """Node-local rank announced by the launcher, or None.

    >>> local_rank_from_env({"SLURM_LOCALID": "3"})
    3
    """
    env = os.environ if env is None else env
    for k in LOCAL_RANK_VARS:
        if k in env:
            return int(env[k])
    return None


def _pick_device(local_rank: int, want_cuda: bool | None) -> str:
    import torch

    use_cuda = torch.cuda.is_available() if want_cuda is None else want_cuda
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but torch.cuda.is_available() is False")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return f"cuda:{index}"
    return "cpu"


def _master_addr(hostnames: list[str]) -> str:
    """Address of rank 0 that every rank can reach: loopback when all ranks share a host."""
    override = os.environ.get("CBEDTDC_MASTER_ADDR")
    if override:
        return override
    if len(set(hostnames)) == 1:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(hostnames[0])
    except OSError as err:
        raise RuntimeError(f"cannot resolve rank 0's host name {hostnames[0]!r}; "
                           "set CBEDTDC_MASTER_ADDR to its address on the fast network") from err


def init_distributed(*, timeout_s: float = 600.0, cuda: bool | None = None) -> DistContext:
    """Start the process group of this job (or nothing in one process).

    Parameters
    ----------
    timeout_s : float
        Timeout of the rendezvous and of every collective: a rank that dies or hangs makes the
        others raise after at most this long.
    cuda : bool or None
        None: use CUDA when available (NCCL backend, one GPU per local rank); False: CPU and gloo.

    Returns
    -------
    DistContext
    """
    kind = launcher_env()
    timeout = _dt.timedelta(seconds=float(timeout_s))
    if kind == "single":
        ctx = DistContext(device=_pick_device(0, cuda), launcher="single", timeout_s=timeout_s)
        log.info("one process, device %s", ctx.device)
        return ctx

    import torch.distributed as dist

    if kind == "torchrun":
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = local_rank_from_env() or 0
        device = _pick_device(local, cuda)
        ctx = DistContext(rank, world, local, device, None, "torchrun", timeout_s)
        if world > 1:
            backend = "nccl" if device.startswith("cuda") else "gloo"
            dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world, timeout=timeout)
            ctx.backend = backend
        log.info("torchrun rank %d/%d, device %s, backend %s", rank, world, device, ctx.backend)
        return ctx

    from mpi4py import MPI  # MPI_Init happens here, before any torch.distributed call

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    announced = next(((k, int(os.environ[k])) for k in MPI_SIZE_VARS if k in os.environ), None)
    if announced is not None and announced[1] != world:
        # every rank would train alone and write the same outputs: refuse
        raise RuntimeError(
            f"the launcher started {announced[1]} ranks ({announced[0]}={announced[1]}) but MPI sees a world of "
            f"{world}: mpi4py is not talking to the launcher's MPI (e.g. the PyPI mpich package under srun/jsrun, "
            "or jsrun --smpiargs=off); use an mpi4py built for the site MPI or set MPI4PY_LIBMPI")
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank).Get_rank()
    device = _pick_device(local, cuda)
    ctx = DistContext(rank, world, local, device, None, "mpi", timeout_s, comm)
    if world == 1:
        log.info("MPI with one rank: no process group, device %s", device)
        return ctx
    hostnames = comm.allgather(socket.gethostname())
    info = None
    store = None
    if rank == 0:
        addr = _master_addr(hostnames)
        bind = "0.0.0.0" if addr != "127.0.0.1" else addr
        try:
            store = dist.TCPStore(bind, 0, world, is_master=True, wait_for_workers=False, timeout=timeout)
            info = (addr, store.port, None)
        except Exception as err:  # report to the workers instead of leaving them in bcast
            info = (None, None, f"{type(err).__name__}: {err}")
    addr, port, error = comm.bcast(info, root=0)
    if error:
        raise RuntimeError(f"rank 0 could not open the rendezvous store: {error}")
    if rank != 0:
        store = dist.TCPStore(addr, port, world, is_master=False, timeout=timeout)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    ctx.backend = backend
    log.info("MPI rank %d/%d (local %d), device %s, backend %s, store %s:%d",
             rank, world, local, device, backend, addr, port)
    return ctx


def abort_job(ctx: DistContext | None, err: BaseException) -> None:
    """End every rank of the job after ``err`` on this rank.

    Under MPI this calls ``MPI_Abort`` so the launcher kills all ranks at once; under torchrun
    the elastic agent does so when this process exits; other ranks blocked in a collective
    fail after the process group's timeout at the latest.
    """
    if ctx is None or ctx.world_size <= 1:
        return
    log.critical("rank %d failed (%s: %s); ending all %d ranks", ctx.rank, type(err).__name__, err,
                 ctx.world_size)
    for h in logging.getLogger().handlers:
        try:
            h.flush()
        except Exception:  # noqa: BLE001 - best effort before abort
            pass
    if ctx.launcher == "mpi" and ctx._comm is not None:
        import time

        time.sleep(1.0)  # let the launcher forward the last log lines; MPI_Abort tears its I/O down
        ctx._comm.Abort(1)
