"""The compile options of a run from its settings (``sdpose-edge run`` and ``sdpose-edge serve`` alike): the
settings linked to :class:`~edge_runtime.model.models.CompileOptions` fields, and the precision hint a CPU runs a
folder fastest at when the user set none."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

from edge_runtime.model.cpu import cpu_info, recommended_precision_hint
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
    ``quantized``: whether the models are INT8 (None: the folder index says)."""
    if options.inference_precision is not None:
        return options, "user"
    if not options.device.upper().startswith("CPU"):
        return options, "device default"
    if quantized is None:
        quantized = bool(read_index(models).get("quantized"))
    hint = recommended_precision_hint(cpu_info(), quantized)
    if hint is None:
        return options, "device default"
    logger.info("precision hint %s: an INT8 folder runs faster with f32 float ops on a bf16 CPU without AMX "
                "(set --precision-hint to override)", hint)
    return dataclasses.replace(options, inference_precision=hint), "per-ISA default (INT8 on bf16 without AMX)"
