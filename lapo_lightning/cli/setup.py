"""What a command needs before it parses a config or starts a run, shared by ``lapo fit``
(``cli/fit.py``) and ``lapo eval`` (``evaluation/run.py``): plugin classes imported for short
``class_path`` names, and the hint when torch's CPU threads would fight over cores.

Below the dispatcher (``cli.py``), which imports nothing of it, so no import runs in a circle.
"""

from __future__ import annotations

import math
import os
from pathlib import Path


def prepare_config_parsing() -> None:
    """What a command that parses a YAML config needs first: the config dataclasses' field
    docstrings as --help text, and every plugin imported (a short ``class_path`` such as
    ``LengthBand`` resolves only among the subclasses already imported)."""
    from jsonargparse import set_parsing_settings

    import lapo_lightning

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    lapo_lightning.import_plugins()


def cpu_thread_hint(threads: int, cores: int, load: float) -> str | None:
    """A one-line hint when torch's CPU threads are likely to fight over cores, else None.

    Torch's threads meet at a barrier after every operation, so one thread that another
    process keeps off its core stalls them all (decoding was measured 30-40x slower with 2
    threads than with 1 on a 2-core machine busy with another job). Hinted when there is more than
    one thread and either more threads than the cores this process may use, or a load
    average that already fills those cores before the run starts.
    Example: ``cpu_thread_hint(2, 2, 4.0)`` -> a hint; ``cpu_thread_hint(8, 8, 0.5)`` -> None.
    """
    if threads <= 1 or (threads <= cores and load < cores):
        return None
    why = (f"only {cores} cores are available to this process" if threads > cores
           else f"the {cores} available cores are already busy (load average {load:.1f})")
    return (f"CPU: torch uses {threads} threads but {why}; if steps are slow, try OMP_NUM_THREADS=1 "
            "(README, Threads on CPU)")


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a container's
    --cpus), which torch's default thread count (the machine's physical cores) ignores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


_hinted = False


def print_cpu_thread_hint() -> None:
    """Print :func:`cpu_thread_hint` once per process: later phases of ``lapo demo`` would see
    the load of this very process."""
    global _hinted
    if _hinted:
        return
    _hinted = True
    import torch
    from lightning.pytorch.utilities import rank_zero_info

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    hint = cpu_thread_hint(torch.get_num_threads(), available_cores(), load)
    if hint:
        rank_zero_info(hint)
