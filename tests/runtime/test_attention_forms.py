"""scripts/attention_forms.py: every exact form of an attention agrees with the SDPA op, and the unfused form
really runs unfused (separate MatMul and Softmax kernels) while the SDPA op is fused."""
from __future__ import annotations

import numpy as np
import openvino as ov

from tests.scripts_loader import load_script


def _script():
    return load_script("attention_forms")


def test_forms_agree_and_report() -> None:
    forms = _script()
    result = forms.screen((96, 16, 2), chunks=3, rounds=1)
    assert set(result["forms"]) == {"sdpa", "sdpa_chunks", "explicit", "unfused", "unfused_chunks", "sdpa_again",
                                    "products_const"}
    assert result["forms"]["products_const"]["max_abs_diff"] is None  # a reference, not an attention
    for name, row in result["forms"].items():
        assert name == "products_const" or row["max_abs_diff"] < 1e-5, name
        assert row["median_ms"] > 0 and row["gflops"] > 0
    assert abs(result["gflop"] - 4 * 2 * 96 * 96 * 16 / 1e9) < 1e-2
    kinds = {row["type"] for row in result["unfused_ops"]}
    assert {"MatMul", "Softmax"} <= kinds


def test_chunked_form_matches_numpy() -> None:
    forms = _script()
    shape = (40, 8, 1)
    model = forms.build_form("explicit", shape, chunks=4)
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 1, 40, 8)).astype(np.float32) for _ in range(3))
    out = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})([q, k, v])[0]
    scores = q[0, 0] @ k[0, 0].T / np.sqrt(8)
    weights = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected = (weights / weights.sum(axis=1, keepdims=True)) @ v[0, 0]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-4, atol=1e-5)
    fused = ov.Core().compile_model(forms.build_form("sdpa", shape), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    assert "Softmax" not in {op.get_rt_info()["layerType"].astype(str) for op in fused.get_runtime_model().get_ops()}
