"""Length-control methods from the literature as reward/callback plugins (issue 13), one module each.

Each module cites its paper, states the formula and defaults, and says where it departs.
No imports here: reference classes by their full path, e.g.
``class_path: lapo_lightning.methods.l1.L1Max``.
"""
