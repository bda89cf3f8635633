"""Where models come from: name resolution (``source.py``: hub ids, local folders, ``tiny:`` and
``gguf:`` names), the tiny offline models (``tiny.py``), GGUF conversion (``gguf.py``), the build
cache both share (``cache.py``), shipped architecture facts (``known.py``), a model's shape from
its config (``shape.py``) and checks of saved adapter files (``adapter_files.py``).
"""
