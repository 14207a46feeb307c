"""Benchmark: preparing photos for the vision model (bot/media.py), time and memory.

  time    one 12-megapixel JPEG (4000x3000, photo-like noise, EXIF orientation 6) read,
          rotated, downscaled and encoded for the model: p50 <= 150 ms (detail high)
  memory  10 such photos (distinct files) prepared at once through the real async path
          (prepare_image_async on its bounded pool): peak RSS above the baseline with the
          10 downloads already in memory <= 100 MB. For comparison, the naive way (full
          decode, exif_transpose, thumbnail; 10 threads) is measured the same way.

    .venv/bin/python bench/media.py [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.media import PREP_WORKERS, prepare_image, prepare_image_async

TIME_TARGET_MS = 150.0
MEMORY_TARGET_MB = 100.0
PAGE = 4096


def photo(seed: int, width: int = 4000, height: int = 3000) -> bytes:
    """A 12 MP photo-like JPEG (gradients + noise, quality 90) tagged to be rotated 90°."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)],
                    -1).astype(np.int16)
    arr = np.clip(base + rng.integers(-40, 40, size=(height, width, 3), dtype=np.int16), 0,
                  255).astype(np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


class PeakRSS:
    """Samples RSS every millisecond on a thread while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def time_one(data: bytes, runs: int) -> None:
    prepare_image(data, "high")  # warm-up (imports, codec tables)
    for detail in ("high", "low"):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = prepare_image(data, detail)
            times.append((time.perf_counter() - start) * 1000)
        p50 = statistics.median(times)
        verdict = "OK" if p50 <= TIME_TARGET_MS else "MISSED"
        print(f"  detail={detail:<4}  -> {out.width}x{out.height} {out.mime}, "
              f"{len(out.data) / 1e3:.0f} kB   p50 {p50:.1f} ms  max {max(times):.1f} ms   "
              f"target p50 <= {TIME_TARGET_MS:.0f} ms: {verdict}")


def naive(data: bytes) -> bytes:
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data)).convert("RGB"))
    img.thumbnail((2000, 2000))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


async def concurrent_real(photos: list[bytes]) -> list[int]:
    results = await asyncio.gather(*(prepare_image_async(p, "high") for p in photos))
    return [len(r.data) for r in results]


def memory(photos: list[bytes]) -> None:
    base = rss_mb()
    with PeakRSS() as real:
        start = time.perf_counter()
        asyncio.run(concurrent_real(photos))
        real_s = time.perf_counter() - start
    real_mb = real.peak - base
    verdict = "OK" if real_mb <= MEMORY_TARGET_MB else "MISSED"
    print(f"  bot path ({PREP_WORKERS} image workers): peak +{real_mb:.0f} MB over "
          f"{base:.0f} MB baseline, all 10 done in {real_s * 1000:.0f} ms   "
          f"target <= {MEMORY_TARGET_MB:.0f} MB: {verdict}")
    base = rss_mb()
    with PeakRSS() as nv, ThreadPoolExecutor(max_workers=len(photos)) as pool:
        start = time.perf_counter()
        list(pool.map(naive, photos))
        naive_s = time.perf_counter() - start
    print(f"  naive (full decode, 10 threads): peak +{nv.peak - base:.0f} MB, "
          f"{naive_s * 1000:.0f} ms (for comparison)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print("generating 10 photos of 12 MP ...")
    photos = [photo(seed) for seed in range(10)]
    sizes = [len(p) / 1e6 for p in photos]
    print(f"  4000x3000 JPEG, EXIF orientation 6, {min(sizes):.1f}-{max(sizes):.1f} MB each")
    print("time: read, rotate, downscale, encode one photo")
    time_one(photos[0], args.runs)
    print("memory: 10 photos arriving at once")
    memory(photos)


if __name__ == "__main__":
    main()
