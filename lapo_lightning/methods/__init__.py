"""Length-control methods from the literature as reward/callback plugins, one module each.

Each module cites its paper, states the formula and defaults, and says where it departs;
``docs/methods.md`` compares them. The package re-exports every plugin, so YAML can use the
short name (``class_path: L1Max``) as well as the full path
(``class_path: lapo_lightning.methods.l1.L1Max``). ``lapo compare`` trains them side by side.
"""
