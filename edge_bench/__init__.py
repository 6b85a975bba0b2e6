"""Benchmark tools for the edge runtime (``sdpose-edge bench``; ``sdpose-convert bench`` adds the PyTorch
baseline). Not part of the device runtime: ``edge_runtime/`` never imports this package.

Modules: :mod:`.timing` (variants timed interleaved, statistics, the compute-limit analysis), :mod:`.variants`
(the OpenVINO variants of model folders), :mod:`.peak` (MatMul peak micro-benchmark, FLOPs counted on an IR),
:mod:`.end_to_end` (file-mode runs in fresh processes), :mod:`.report` (bench.json / .md / .png),
:mod:`.child` (running a function in a fresh process), :mod:`.cli` (the driver and the command line).
"""
