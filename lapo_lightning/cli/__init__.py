"""The ``lapo`` command line: the dispatcher (``main.py``: ``lapo fit``, ``eval``, ``compare``,
``demo``, ``answer``, ``check``, ``data``, ``table``, ``plot``), each subcommand's own module, the
config parsing they share (``setup.py``, ``parse_errors.py``), the one-line failure reports
(``failures.py``) and the phase runner that chains fits and evaluations (``phases.py``).
Nothing in the training core imports from here.
"""
