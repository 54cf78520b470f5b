"""Offline training: recipes (config), the warm-up + poly schedule, the trainer, checkpoints, DDP, logs and plots.

`mmseg train --config train/<recipe>.yaml` is the entry point (cli); `run.run(recipe, out_dir)` does the same from
Python. Sub-modules are imported by name so that importing this package costs nothing.
"""
