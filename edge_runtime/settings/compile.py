"""The compile options of a run from its settings (``sdpose-edge run`` and ``sdpose-edge serve`` alike): the
settings linked to :class:`~edge_runtime.model.models.CompileOptions` fields, and the precision hint a CPU runs a
folder fastest at when the user set none."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

from edge_runtime.model.cpu import (cpu_info, precision_hint_reason, recommended_precision_hint,
                                   recommended_static_batch)
from edge_runtime.model.metadata import read_index
from edge_runtime.model.models import CompileOptions
from edge_runtime.settings.schema import from_settings, linked_keys

logger = logging.getLogger(__name__)

#: the settings that are compile options (``sdpose-edge serve`` takes them too; ``batch`` is its own there)
COMPILE_KEYS: tuple[str, ...] = tuple(key for key in linked_keys(CompileOptions) if key != "batch")


def compile_options(settings: Mapping[str, Any]) -> CompileOptions:
    """The settings' compile options; a hint left unset is THROUGHPUT (live runs then apply
    :func:`edge_runtime.model.compile_choice.choose_compile_options`)."""
    return from_settings(CompileOptions, settings, model_device=settings.get("model_device") or None)


def per_isa_options(options: CompileOptions, models: "str | Path",
                    quantized: "bool | None" = None) -> tuple[CompileOptions, str]:
    """``options`` with the precision hint this CPU runs the folder fastest at, when the user set none
    (:func:`edge_runtime.model.cpu.recommended_precision_hint`); returns (options, where the hint came from).
    ``quantized``: whether the models are INT8 (None: the folder index says). A ``static_batch`` left unset
    (None) is resolved too (:func:`edge_runtime.model.cpu.recommended_static_batch`), logged when it is on."""
    options = _static_batch_default(options)
    if options.inference_precision is not None:
        return options, "user"
    if not options.device.upper().startswith("CPU"):
        return options, "device default"
    if quantized is None:
        quantized = bool(read_index(models).get("quantized"))
    info = cpu_info()
    hint = recommended_precision_hint(info, quantized)
    if hint is None:
        return options, "device default"
    reason = precision_hint_reason(info)
    logger.info("precision hint %s: %s (set --precision-hint to override)", hint, reason)
    return dataclasses.replace(options, inference_precision=hint), f"per-ISA default ({reason})"


def _static_batch_default(options: CompileOptions) -> CompileOptions:
    """``options`` with ``static_batch`` decided when the user left it unset (None): static on CPUs where
    static shapes measured faster, with batch 1; the device default (dynamic) elsewhere."""
    if options.static_batch is not None:
        return options
    static = options.device.upper().startswith("CPU") and recommended_static_batch(cpu_info(), options.batch)
    if static:
        logger.info("static batch 1: static shapes run faster on this AVX-512 CPU (set --no-static-batch to keep "
                    "the dynamic batch)")
    return dataclasses.replace(options, static_batch=static)
