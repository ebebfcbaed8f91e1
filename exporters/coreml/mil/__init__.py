"""edgeconv's numpy MIL evaluator: the program loader (program.py) and the op kernels (kernels.py)."""
