"""Top-down pose estimation with a converted model folder, compiled here: (image, boxes) -> keypoints, scores.

``PoseEstimator`` follows rtmlib's split ``preprocess`` / ``infer`` / ``postprocess`` (+ ``__call__``)
so that the async pipeline can run the same three stages on its own infer queues. The stages around the chain are
the model's contract (:class:`edge_runtime.model.contract.PoseContract`, read from the folder's rt_info); this module
compiles the chain (``split`` vae_encoder -> pose, or ``fused`` vae_pose) and runs it with the synchronous
:class:`edge_runtime.model.chain.ChainRunner`.

Decoding (``decode``): ``numpy`` (:func:`edge_runtime.model.codec.decode_heatmaps`, after the chain) or ``graph``
(:mod:`edge_runtime.model.codec_graph`: the same decoder in OpenVINO operations, appended to the pose IR when it is
loaded, so the chain's last request returns ``keypoints`` [N,K,3] crop px + score instead of heatmaps; with
``flip_test`` the chain keeps its heatmaps, averaged here, and a compiled decoder alone decodes them).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge_runtime.model.chain import ChainRunner, RequestPool
from edge_runtime.model.codec_graph import decoder_model, with_keypoints
from edge_runtime.model.contract import (DECODERS, ContractRunner, PoseContract, check_boxes,  # noqa: F401
                                         check_image, folder_contract)
from edge_runtime.model.cpu import describe_runtime
from edge_runtime.model.models import CompileOptions, compile_model, optimal_requests

logger = logging.getLogger(__name__)


def graph_decoder(contract: PoseContract, core: ov.Core, options: CompileOptions) -> Any:
    """The graph decoder alone (heatmaps [N,K,H,W] -> keypoints [N,K,3]; always f32), compiled, as a function."""
    import dataclasses

    model = decoder_model(contract.num_keypoints, contract.heatmap_size, contract.input_size,
                          contract.blur_kernel_size)
    compiled = compile_model(core, model, dataclasses.replace(options, inference_precision="f32"))
    return RequestPool(compiled).run


class PoseEstimator(ContractRunner):
    """SDPose top-down estimator on a model folder, compiled here.

    Args:
        models_dir: model folder written by ``sdpose-convert export``.
        options: compile options. Default (None): ``CompileOptions(performance_hint="LATENCY")`` (CPU,
            cache in ~/.cache/sdpose-edge), because the synchronous calls here run one request at a time
            and THROUGHPUT splits the cores into streams (on a 2-core CPU: 2 streams x 1 thread, so one
            request gets 1 thread; LATENCY: 1 stream x 2 threads). The async pipeline passes THROUGHPUT.
        chain: "split" / "fused" / None (the index's default_chain).
        core: an ``openvino.Core`` to share (one is created if None).
        flip_test: also run horizontally flipped crops and average the heatmaps (mmpose flip_mode
            'heatmap', shift_heatmap=False). Doubles the pose cost.
        max_batch: largest batch of crops sent through one synchronous inference in :meth:`infer`.
            Default 1: at full size (1024x768, bf16, 2-core CPU) a batch of 2 costs the same per crop
            (12.9 s vs 6.2 s) but +1.3 GB RSS per extra crop (6.5 -> 7.8 GB).
        padding: person-box padding of the crop (None: the folder's ``bbox_padding``, 1.25 as SDPose).
        decode: "numpy" (decode_heatmaps after the chain) or "graph" (OpenVINO decoder appended to the pose IR);
            None: the ``decode`` setting's default (:data:`edge_runtime.config.DEFAULTS`).

    Attributes:
        folder (ModelFolder), contract (PoseContract), meta (dict: pose IR metadata), input_size (w, h) crop px,
        heatmap_size (w, h), num_keypoints K, scheme ("wholebody"/"body"), padding (bbox padding),
        chain, kinds (component kinds in chain order), compiled {kind: openvino.CompiledModel}.
    """

    def __init__(self, models_dir: str | Path, options: CompileOptions | None = None, chain: str | None = None,
                 core: ov.Core | None = None, flip_test: bool = False, max_batch: int = 1,
                 padding: float | None = None, decode: str | None = None):
        self.options = options if options is not None else CompileOptions(performance_hint="LATENCY")
        super().__init__(*folder_contract(models_dir, chain, core, flip_test, max_batch, padding, decode))
        #: the chain's last request returns keypoints [N,K,3] (decoder in the pose IR) instead of heatmaps
        self.contract.chain_keypoints = self.decode == "graph" and not self.flip_test and self._computes_f32()
        self.compiled: dict[str, ov.CompiledModel] = {kind: self._compile(kind) for kind in self.kinds}
        self._chain_runner = ChainRunner.of(self.compiled)
        if self.decode == "graph" and not self.chain_keypoints:
            self.contract.decoder = graph_decoder(self.contract, self.core, self.options)
        #: what the runtime computes with: device, CPU INT8 path, precision read back from each compiled model
        self.runtime_info: dict[str, Any] = describe_runtime(
            self.core, self.options.device, self.compiled, {k: self.folder.metadata(k) for k in self.kinds},
            str(self.folder.path))
        self.runtime_info["variant"] = self._variant()
        self.folder.release()  # the compiled models hold the weights now
        logger.info("pose models: %s chain %s, %s %d keypoints, input %dx%d (preset %s, token downsampling x%d, "
                    "VAE encoder x%d), device %s (%s)", self.folder.path, self.chain, self.scheme, self.num_keypoints,
                    *self.input_size, self.info.preset or "unrecorded", self.info.token_downsample,
                    self.info.vae_token_downsample, self.options.device, self.options.performance_hint)

    def _compile(self, kind: str) -> ov.CompiledModel:
        """Compile component ``kind``; the last one with the decoder appended when the chain returns keypoints."""
        model = self.folder.read_model(kind)
        if self.chain_keypoints and kind == self.kinds[-1]:
            model = with_keypoints(model, self.input_size, self.blur_kernel_size, keep_heatmaps=False)
        return compile_model(self.core, model, self.options)

    def _computes_f32(self) -> bool:
        """The pose IR computes in f32 (the decoder appended to it runs at its precision; bf16/f16 would move the
        points): the hint set, else the device's default. Otherwise the decoder runs alone, in f32."""
        precision = self.options.inference_precision
        if precision is None:
            try:
                precision = str(self.core.get_property(self.options.device, "INFERENCE_PRECISION_HINT"))
            except RuntimeError:
                precision = "unknown"
        if precision not in ("f32", str(ov.Type.f32)):
            logger.info("decode graph: the pose model computes in %s, so the decoder runs as a model of its own "
                        "in f32", precision)
            return False
        return True

    # ------------------------------------------------------------------ helpers for async users
    def input_name(self, kind: str) -> str:
        """Name of the (single) input of compiled component ``kind`` ("image" or "latent")."""
        return self.compiled[kind].input(0).get_any_name()

    def output_name(self, kind: str) -> str:
        """Name of the (single) output of compiled component ``kind`` ("latent" or "heatmaps")."""
        return self.compiled[kind].output(0).get_any_name()

    def num_requests(self, kind: str) -> int:
        """Infer requests to create for ``kind`` (options.num_requests or the device's optimum)."""
        return optimal_requests(self.compiled[kind], self.options)

    def _run_chain(self, crops: np.ndarray) -> np.ndarray:
        """crops [n,h,w,3] u8 -> heatmaps [n,K,h/4,w/4] f32 through the chain (synchronous)."""
        return np.asarray(self._chain_runner.run(crops), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"PoseEstimator({str(self.folder.path)!r}, chain={self.chain!r}, scheme={self.scheme!r}, "
                f"K={self.num_keypoints}, input={self.input_size[0]}x{self.input_size[1]})")
