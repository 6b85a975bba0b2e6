"""Bounded memory for NNCF's statistics collection: the statistic branches run as soon as their tensor exists.

NNCF (OpenVINO backend) collects activation statistics by adding one ``Result`` per statistic to a copy of the
model (after an in-graph reducer such as ReduceMin/ReduceMax/ReduceMean, or on the raw tensor) and running that
model on each calibration sample. It appends those results *after* the model's own outputs. OpenVINO orders a
model's operations depth-first from its results in their order, so the whole network (reaching the model's own
output) is scheduled first and every statistic branch after it: each tagged activation stays alive until the
end of the inference. At 1024x768 that is every convolution input of the VAE encoder at once (measured: 14.0 GB
RSS for one sample, against 2.7 GB for the plain FP32 encoder; docs/benchmarks.md, "Conversion within 12 GiB").

:func:`statistics_outputs_first` puts the statistic results *first*, in the topological order of the tensors
they reduce: each reducer is then scheduled right after its tensor is made, and the tensor is freed as soon
as its last consumer ran. The operations, their inputs and therefore every statistic are the same; only
the execution order (and the memory plan) changes. Written by hand because NNCF has no option for the order
of its statistic outputs: the wrapper replaces ``OVModelTransformer._insert_outputs`` for the duration of a
``with`` block and leaves NNCF as it was when NNCF lacks that method (another NNCF version): the conversion
then runs exactly as before, with NNCF's own order.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import openvino as ov

logger = logging.getLogger(__name__)

#: the NNCF function that adds the statistic outputs to a model copy (class, attribute)
_TARGET = ("nncf.openvino.graph.model_transformer", "OVModelTransformer", "_insert_outputs")


def _source_position(result: Any, position: dict[str, int]) -> int:
    """Position (in ``position``: the ordered operations of the model before this insertion) of the latest
    known operation the statistic ``result`` depends on, walking up from it through the nodes NNCF inserted
    (reducers, their axes constants, converts) until known operations are reached."""
    best, stack, seen = -1, [v.get_node() for v in result.input_values()], set()
    while stack:
        node = stack.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if name in position:
            best = max(best, position[name])
            continue
        stack.extend(value.get_node() for value in node.input_values())
    return best


def reorder_statistic_results(source: ov.Model, model: ov.Model, moved: "set[str] | None" = None) -> ov.Model:
    """``model`` (= ``source`` plus statistic results appended after its own) with the statistic results first,
    in the order of the tensors they read; the model's own results follow. Results named in ``moved`` (statistic
    results of an earlier insertion into ``source``) count as statistic results too; the names of all of them
    are added to ``moved``. Same nodes, same names, same rt_info."""
    moved = set() if moved is None else moved
    own = len(source.get_results())
    results = list(model.get_results())
    if len(results) <= own:
        return model  # nothing appended by this insertion
    extra = [r for i, r in enumerate(results) if i >= own or r.get_friendly_name() in moved]
    names = {r.get_friendly_name() for r in extra}
    position = {op.get_friendly_name(): i for i, op in enumerate(source.get_ordered_ops())}
    extra.sort(key=lambda r: _source_position(r, position))
    rest = [r for r in results if r.get_friendly_name() not in names]
    reordered = ov.Model(results=extra + rest, sinks=model.get_sinks(), parameters=model.get_parameters(),
                         name=model.friendly_name)
    for key in model.get_rt_info():
        reordered.set_rt_info(model.get_rt_info([str(key)]), [str(key)])
    moved.update(names)
    return reordered


def _ordered(insert: Callable[..., ov.Model]) -> Callable[..., ov.Model]:
    moved: set[str] = set()

    def insert_outputs(model: ov.Model, outputs: Any) -> ov.Model:
        return reorder_statistic_results(model, insert(model, outputs), moved)

    return insert_outputs


@contextmanager
def statistics_outputs_first() -> Iterator[bool]:
    """Within the block, NNCF's statistic models run each statistic branch as early as its tensor exists
    (module doc). Yields True when applied, False when this NNCF has no ``_insert_outputs`` to wrap."""
    import importlib

    module_name, class_name, attr = _TARGET
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        original = cls.__dict__[attr]
    except (ImportError, AttributeError, KeyError):
        logger.warning("NNCF has no %s.%s.%s: statistics are collected in NNCF's own order (more memory)",
                       module_name, class_name, attr)
        yield False
        return
    setattr(cls, attr, staticmethod(_ordered(original.__func__)))
    try:
        yield True
    finally:
        setattr(cls, attr, original)
