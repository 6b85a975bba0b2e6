"""Train the proxy: a tiny SDPose-architecture model on drawn figures, where accuracy can be measured.

Random weights say nothing about accuracy, and the released weights cannot be downloaded here. The proxy is
the real SDPose computation -- VAE encoder -> latent x 0.18215 -> UNet at t=999 with the folded empty-prompt
and class constants, truncated after ``up_blocks[2]`` -> the released head layout (InstanceNorm + SiLU) ->
133 COCO-WholeBody heatmaps -- at the tiny synthetic widths and a 128x96 crop, trained end to end (VAE
encoder, UNet up to the head's block, head; the constants stay as initialised) with the UDP heatmap MSE on
:mod:`convert.figures` crops cut with the runtime's own UDP geometry. It is saved in the exact public
checkpoint layout, so ``sdpose-convert`` converts it and ``sdpose-edge`` runs it like a real checkpoint.

What it can say: how conversion, quantization (both INT8 paths), resolution, scheduling and propagation
change accuracy *relative to its own full-precision result*, on figures with exact ground truth. What it
cannot say: the released model's absolute accuracy on real people.

Deterministic: seeded data and initialisation, a fixed step count and thread count (same machine type and
library versions -> the same weights). ``python -m convert.train_proxy OUT [--steps N]``; the default 1600
steps took 72 minutes on 2 cores that a full-size conversion shared (2.6-2.8 s per step), less alone.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from convert import figures
from edge_runtime.model.codec import decode_heatmaps, encode_keypoints
from edge_runtime.model.geometry import udp_warp_matrix, warp_crop

logger = logging.getLogger(__name__)

#: crop (w, h) of the proxy: 1/8 of SDPose's 768x1024 per side
INPUT_WH = (96, 128)
HEATMAP_WH = (24, 32)
SIGMA = 1.5
#: loss weight per keypoint part (body, feet, face, hands)
PART_WEIGHTS = ((0, 17, 1.0), (17, 23, 1.0), (23, 91, 0.3), (91, 133, 0.5))
CANVAS_WH = (240, 200)
DEFAULTS = dict(steps=1600, batch=16, lr=2e-3, seed=0, threads=2, val_crops=192)


def make_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training crop: (crop BGR u8 [128,96,3], keypoints [133,2] crop px, box_xyxy [4] image px).

    A canvas with the target figure and 0-2 others (which may overlap it); the box is the target's ground
    truth box with scale/shift jitter; the crop is the runtime's UDP crop (padding 1.25)."""
    w, h = CANVAS_WH
    height = float(rng.uniform(0.55, 0.95) * h)
    target = figures.random_pose(rng, (float(rng.uniform(0.3, 0.7) * w), float(h * 0.5 + rng.uniform(-0.1, 0.15) * h)),
                                 height)
    poses = [target]
    for _ in range(int(rng.integers(0, 3))):
        poses.append(figures.random_pose(rng, (float(rng.uniform(0, w)), float(rng.uniform(0.35, 0.75) * h)),
                                         float(rng.uniform(0.4, 1.0) * h)))
    looks = [figures.random_look(rng) for _ in poses]
    image, kps, boxes = figures.render_scene(CANVAS_WH, poses, looks, rng)
    if rng.random() < 0.3:
        k = int(rng.choice([3, 5]))
        image = cv2.GaussianBlur(image, (k, k), 0)
    box = boxes[0].copy()
    bw, bh = box[2] - box[0], box[3] - box[1]
    scale = rng.uniform(0.9, 1.1)
    cx, cy = (box[0] + box[2]) / 2 + rng.uniform(-0.05, 0.05) * bw, (box[1] + box[3]) / 2 + rng.uniform(-0.05, 0.05) * bh
    box = np.array([cx - bw * scale / 2, cy - bh * scale / 2, cx + bw * scale / 2, cy + bh * scale / 2], np.float32)
    matrix = udp_warp_matrix(box, input_size=INPUT_WH)
    crop = warp_crop(image, matrix, input_size=INPUT_WH)
    kp = kps[0] @ matrix[:, :2].T + matrix[:, 2]
    return crop, kp.astype(np.float32), box


def to_tensor(crops_bgr: np.ndarray) -> torch.Tensor:
    """[N,H,W,3] u8 BGR -> [N,3,H,W] RGB in [-1, 1] (what the VAE IR's preprocessing computes)."""
    x = torch.from_numpy(np.ascontiguousarray(crops_bgr[..., ::-1])).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def batch(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    crops, targets, kps = [], [], []
    for _ in range(n):
        crop, kp, _ = make_sample(rng)
        crops.append(crop)
        kps.append(kp)
        targets.append(encode_keypoints(kp, input_size=INPUT_WH, heatmap_size=HEATMAP_WH, sigma=SIGMA))
    return to_tensor(np.stack(crops)), torch.from_numpy(np.stack(targets)), np.stack(kps)


def keypoint_weights() -> torch.Tensor:
    w = torch.ones(figures.NUM_KEYPOINTS)
    for lo, hi, value in PART_WEIGHTS:
        w[lo:hi] = value
    return w.view(1, -1, 1, 1)


def evaluate(vae: torch.nn.Module, pose: torch.nn.Module, val: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """PCK@0.05 (crop px, normalised by the crop's longer side / 1.25 = the box) on the validation crops."""
    vae.eval()
    pose.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(val), 32):
            crops = np.stack([c for c, _ in val[i:i + 32]])
            heat = pose(vae(to_tensor(crops))).numpy()
            preds.append(decode_heatmaps(heat, input_size=INPUT_WH)[0])
    vae.train()
    pose.train()
    pred = np.concatenate(preds)
    gt = np.stack([k for _, k in val])
    size = np.full(len(val), max(INPUT_WH) / 1.25, np.float32)
    ok = figures.pck(pred, gt, size)
    return {"pck05_all": float(ok.mean()), "pck05_body": float(ok[:, :17].mean()),
            "pck05_feet": float(ok[:, 17:23].mean()), "pck05_face": float(ok[:, 23:91].mean()),
            "pck05_hands": float(ok[:, 91:].mean())}


def train(out: str | Path, steps: int = DEFAULTS["steps"], batch_size: int = DEFAULTS["batch"],
          lr: float = DEFAULTS["lr"], seed: int = DEFAULTS["seed"], threads: int = DEFAULTS["threads"],
          val_crops: int = DEFAULTS["val_crops"]) -> Path:
    """Train the proxy and write it as a checkpoint folder in the public layout at ``out``."""
    from safetensors.torch import save_file

    from convert.checkpoint import class_labels, encode_empty_prompt, load_checkpoint
    from convert.pose_graph import PoseGraph, VaeEncoderGraph
    from convert.synthetic import MARKER_FILE, make_synthetic

    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=".proxy-", dir=out.parent if out.parent.exists() else None))
    try:
        ckpt_dir = make_synthetic(work / "ckpt", size="tiny", scheme="wholebody", seed=seed, detector=False)
        ckpt = load_checkpoint(ckpt_dir)
        pose = PoseGraph(ckpt.unet, ckpt.head, encode_empty_prompt(ckpt), class_labels(), ckpt.up_block).train()
        vae = VaeEncoderGraph(ckpt.vae).train()
        params = [p for p in list(vae.parameters()) + list(pose.parameters()) if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
        warmup = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
        weights = keypoint_weights()
        val_rng = np.random.default_rng(seed + 1_000_003)
        val = [make_sample(val_rng)[:2] for _ in range(val_crops)]
        rng = np.random.default_rng(seed)
        history = []
        for step in range(1, steps + 1):
            x, target, _ = batch(rng, batch_size)
            heat = pose(vae(x))
            loss = (((heat - target) ** 2) * weights).mean() * 1000.0
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == 1:
                logger.info("step %d/%d loss %.4f lr %.2e (%.0f s)", step, steps, float(loss),
                            sched.get_last_lr()[0], time.perf_counter() - started)
            if step % 400 == 0 or step == steps:
                metrics = evaluate(vae, pose, val)
                history.append({"step": step, "loss": float(loss), **metrics})
                logger.info("step %d: validation %s", step, {k: round(v, 4) for k, v in metrics.items()})
        # write the trained modules back in the public layout (PoseGraph shares the UNet's modules)
        ckpt.unet.save_pretrained(work / "ckpt" / "unet", safe_serialization=True)
        ckpt.vae.save_pretrained(work / "ckpt" / "vae", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in ckpt.head.state_dict().items()},
                  str(work / "ckpt" / "decoder" / "decoder.safetensors"))
        (work / "ckpt" / MARKER_FILE).unlink()
        record = {"proxy": True, "what": __doc__.splitlines()[0], "scheme": "wholebody", "head_layout": "instance",
                  "input_size_hw": [INPUT_WH[1], INPUT_WH[0]], "heatmap_size_hw": [HEATMAP_WH[1], HEATMAP_WH[0]],
                  "sigma": SIGMA, "steps": steps, "batch": batch_size, "lr": lr, "seed": seed, "threads": threads,
                  "train_s": round(time.perf_counter() - started, 1), "validation": history,
                  "versions": {"torch": torch.__version__, "numpy": np.__version__},
                  "command": " ".join(sys.argv)}
        (work / "ckpt" / "proxy.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.move(str(work / "ckpt"), str(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("proxy checkpoint written to %s in %.0f s", out, time.perf_counter() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.train_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="checkpoint folder to write (public SDPose layout)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train(args.out, steps=args.steps, batch_size=args.batch, lr=args.lr, seed=args.seed, threads=args.threads,
          val_crops=args.val_crops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
