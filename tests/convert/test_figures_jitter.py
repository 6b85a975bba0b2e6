"""The jitter metric of scripts/score_figures.py (convert.figures.keypoint_jitter): exact on known tracks."""
from __future__ import annotations

import numpy as np

from convert.figures import keypoint_jitter, score_records


def records_from(keypoints: np.ndarray, boxes: np.ndarray) -> list[dict]:
    """predictions.jsonl records of keypoints [T,P,K,2] and boxes [T,P,4] (track id = person index)."""
    return [{"frame": t, "source": f"v#{t}", "persons": [
        {"bbox_xyxy": boxes[t, p].tolist(), "score": 1.0, "track_id": p,
         "keypoints": [[float(x), float(y), 0.9] for x, y in keypoints[t, p]]} for p in range(keypoints.shape[1])]}
        for t in range(len(keypoints))]


def test_jitter_of_the_ground_truth_and_of_alternating_noise() -> None:
    t, k = 12, 17
    rng = np.random.default_rng(0)
    gt = np.repeat(rng.uniform(100, 200, (1, 2, k, 2)), t, axis=0)
    gt[:, 0] += np.arange(t)[:, None, None] ** 2 * [0.5, 0.0]      # person 0 accelerates: 1 px / frame^2 in x
    gt[:, 1] += [400.0, 0.0]
    boxes = np.stack([np.concatenate([gt[i].min(axis=1), gt[i].max(axis=1)], axis=1) for i in range(t)])
    exact = keypoint_jitter(records_from(gt, boxes), gt, boxes)
    assert abs(exact["jitter_px"] - 0.5) < 1e-4 and abs(exact["jitter_gt_px"] - 0.5) < 1e-4
    assert exact["jitter_triples"] == 2 * (t - 2)
    noisy = gt.copy()
    noisy[:, 1] += (np.arange(t) % 2 * 2 - 1)[:, None, None] * [0.0, 0.25]   # person 1: +-0.25 px in y
    jitter = keypoint_jitter(records_from(noisy, boxes), gt, boxes)
    assert abs(jitter["jitter_px"] - (1.0 + 1.0) / 2) < 1e-4          # 4 x 0.25 px on person 1, 1 px on person 0
    assert score_records(records_from(noisy, boxes), gt, boxes)["body"] == 1.0
    # a person missed on one frame: no triple through that frame
    records = records_from(gt, boxes)
    records[5]["persons"] = records[5]["persons"][1:]
    assert keypoint_jitter(records, gt, boxes)["jitter_triples"] == 2 * (t - 2) - 3
