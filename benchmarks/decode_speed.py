"""Decode time of one 96x96x14 heatmap (CPM's output) per decoder, vs upstream's per-channel loop.

Two synthetic maps: ``cpm-like`` is what CPM outputs (Gaussian peaks on a
24x24 map, 4x legacy-bilinear upsampled, so ``subpixel`` refines on the
knots); ``plain`` has the Gaussians drawn at 96x96 (no upsampling detected,
the Taylor step runs on the full map).

    python3 benchmarks/decode_speed.py [--size 96] [--repeat 2000]
"""

from __future__ import annotations

import argparse
import time

import clips  # noqa: F401  (puts the repo on sys.path)
import numpy as np

from edgepose.inference.decode import DECODERS


def upstream_loop(heatmaps: np.ndarray):
    """PoseEstimationForMobile benchmark.py: scipy gaussian_filter + argmax, one channel at a time."""
    from scipy.ndimage import gaussian_filter
    out = []
    for k in range(heatmaps.shape[2]):
        heat = gaussian_filter(heatmaps[:, :, k], sigma=5)
        i = np.unravel_index(np.argmax(heat), heat.shape)
        out.append((i[1] + 1, i[0] + 1))
    return out


def legacy_upsample(low: np.ndarray, f: int) -> np.ndarray:
    """TensorFlow ResizeBilinear(align_corners=False), as in the CPM graph: out[i] = low(i / f)."""
    n = low.shape[0]
    s = np.arange(n * f) / f
    j0 = np.floor(s).astype(int)
    j1, t = np.minimum(j0 + 1, n - 1), (s - j0)
    rows = low[j0] * (1 - t)[:, None, None] + low[j1] * t[:, None, None]
    out = rows[:, j0] * (1 - t)[None, :, None] + rows[:, j1] * t[None, :, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def median_ms(fn, x, repeat: int) -> float:
    for _ in range(20):
        fn(x)
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--keypoints", type=int, default=14)
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:args.size, 0:args.size] + 0.5
    c = rng.uniform(5, args.size - 5, size=(args.keypoints, 2))
    hm = np.stack([np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8.0) for cx, cy in c], axis=2)
    plain = (hm + rng.normal(0, 0.02, hm.shape)).astype(np.float32)
    low = np.ascontiguousarray(hm[::4, ::4])  # peaks sampled on a size/4 grid
    cpm_like = legacy_upsample(low + rng.normal(0, 0.02, low.shape), 4)
    print(f"heatmap {args.size}x{args.size}x{args.keypoints}, median of {args.repeat} runs")
    for label, maps in (("cpm-like", cpm_like), ("plain", plain)):
        ref = median_ms(upstream_loop, maps, max(50, args.repeat // 20))
        print(f"[{label}] {'upstream per-channel loop (scipy)':<36}{ref:8.3f} ms")
        for name, fn in DECODERS.items():
            ms = median_ms(fn, maps, args.repeat)
            print(f"[{label}] {'decoder ' + name:<36}{ms:8.3f} ms   {ref / ms:6.1f}x faster than the upstream loop")


if __name__ == "__main__":
    main()
