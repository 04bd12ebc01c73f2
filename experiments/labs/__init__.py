"""The course's worked examples and experiments as runnable labs: ``python -m experiments.labs``.

Each lab is one small module ``l<lecture>_<name>.py`` defining ``LAB`` (its name, lecture, description and run
time) and ``run(args, report)``. The engine side of a lab is written by hand from the engine's forward/backward
pairs (``manual_backprop``), never with autograd; the twin side is autograd (``torch_reference`` or plain
``torch`` with ``requires_grad``). The shared plumbing (registry, table, run directories, plots) is in
``common.py``; the runner is ``__main__.py``.
"""
