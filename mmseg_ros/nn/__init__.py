"""Models on SAM2: LoRA, the SAM2 backbone wrapper, MLE-SAM, MemorySAM, heads, losses, checkpoints.

No ROS imports anywhere below this package. Entry points: `build.build_model(card)`, `build.load_model(card, ...)`,
`checkpoint.save_checkpoint`, `build.load_checkpoint`.
"""
