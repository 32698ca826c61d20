"""cinstyle's networks and maths: CIN transformer, VGG-19 loss network, losses,
slow optimisation, the style bank format and image I/O. Free of HTTP."""

from model.cpu_memory import apply_defaults as _apply_cpu_memory_defaults

_apply_cpu_memory_defaults()  # before anything imports torch
