"""Where training problems come from, before the DataModule sees them: reading problem files
(``files.py``), normalised problem text and stable ids (``text.py``), sources through
``datasets`` (``sources.py``), data recipes that mix and filter them (``recipe.py``, ``mix.py``)
and the one resolved set both stages read (``resolved.py``).
"""
