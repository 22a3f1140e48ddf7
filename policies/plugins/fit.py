"""Filter ``fit``: the worker's slot offers the CPU, GPU and GPU memory the task asks for."""

from shunter.policies.model import Resources, Task, Worker
from shunter.policies.placement import ACCEPT, PlacementContext, Status


def fits(need: Resources, offer: Resources) -> Status:
    """The pure check under the filter, tested table-style."""
    if need.gpu > offer.gpu:
        return Status.reject(f"needs {need.gpu} GPU, slot has {offer.gpu}", permanent=True)
    if need.gpu_memory_gb > offer.gpu_memory_gb:
        return Status.reject(f"needs {need.gpu_memory_gb:g} GiB GPU memory, slot has {offer.gpu_memory_gb:g}", permanent=True)
    if need.cpu > offer.cpu:
        return Status.reject(f"needs {need.cpu:g} CPU, slot has {offer.cpu:g}", permanent=True)
    if need.memory_gb > offer.memory_gb > 0:
        return Status.reject(f"needs {need.memory_gb:g} GiB memory, slot has {offer.memory_gb:g}", permanent=True)
    return ACCEPT


class Fit:
    name = "fit"

    def filter(self, task: Task, worker: Worker, ctx: PlacementContext) -> Status:
        return fits(task.resources, worker.resources)
