"""Run safety: what keeps a run's results whole and its start honest, around the training core.
Atomic writes, checkpoints and resume (``atomic.py``, ``checkpointing.py``, ``run_identity.py``,
``run_lock.py``, ``finished_results.py``), numerical health (``health.py``), the start-up check
(``preflight*.py``) and the memory estimate with its ``auto`` sizes (``cost.py``,
``cost_advice.py``, ``memory_check.py``, ``auto_sizes.py``).
"""
