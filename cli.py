"""Checkout shim: ``python cli.py fit -c configs/debug/grpo.yaml`` is ``lapo fit -c configs/debug/grpo.yaml``."""

from lapo_lightning.cli.main import run

if __name__ == "__main__":
    run()
