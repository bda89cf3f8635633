"""Checkout shim: ``python cli.py fit -c configs/debug.yaml`` is ``lapo fit -c configs/debug.yaml``."""

from lapo_lightning.cli import main

if __name__ == "__main__":
    main()
