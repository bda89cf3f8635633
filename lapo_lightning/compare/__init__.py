"""``lapo compare``: length-control methods trained side by side, one report.

Flow: :mod:`~lapo_lightning.compare.run` reads a comparison config (``configs/compare/demo.yaml``:
an ordered list of ``lapo fit`` / ``lapo eval`` phases and a report folder) and runs the phases
through :mod:`lapo_lightning.cli.phases` (resumable, a few steps each with ``--smoke``);
:mod:`~lapo_lightning.compare.report` then reads every evaluation's ``results.json`` and writes
the table, and :mod:`~lapo_lightning.compare.pareto` the accuracy-versus-tokens plot with the
Pareto front marked.
"""
