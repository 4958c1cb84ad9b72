#!/usr/bin/env python3
"""Image and audio encoders: g3n vs the transformers reference, same checkpoint, same threads, one run.

    python3 bench/media_bench.py [--model DIR] [--threads 2] [--repeat 3]

--model: a multimodal Gemma 3n checkpoint with real-shape towers. Default: /work/models/towers, made on first
use with `g3n make-random --preset tiny --towers real --dtype bf16` (a tiny text decoder beside
MobileNet-V5-300M and the 1536-wide, 12-block USM Conformer; 2 GB).

Measured: time to turn a file into soft tokens (decode + preprocess + encoder + embedder) for an image at 256,
512 and 768 px and for a 30 s clip (188 tokens), best of --repeat after a warm-up, model load excluded.
g3n: build/release/media_bench. Reference: Gemma3nForConditionalGeneration in float32 on torch's CPU backend
with torch.set_num_threads(--threads): processor (SiglipImageProcessor / Gemma3nAudioFeatureExtractor) +
get_image_features / get_audio_features. Prints a markdown table with the ratio reference / g3n.
"""

from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def write_clip(path: Path, seconds: float = 30.0) -> Path:
    t = np.arange(int(16000 * seconds)) / 16000
    x = (0.2 * np.sin(2 * np.pi * (200 + 50 * t) * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size))
    d = x.astype("<f4").tobytes()
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(d)) + b"WAVEfmt " +
                     struct.pack("<IHHIIHH", 16, 3, 1, 16000, 64000, 4, 32) + b"data" + struct.pack("<I", len(d)) + d)
    return path


def reference_times(model_dir: Path, image: Path, clip: Path, sizes, threads: int, repeat: int) -> dict:
    import torch
    from PIL import Image
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nForConditionalGeneration, SiglipImageProcessor

    torch.set_num_threads(threads)
    model = Gemma3nForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()

    def best(fn):
        fn()
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    out = {"image_seconds": {}}
    with torch.no_grad():
        for s in sizes:
            proc = SiglipImageProcessor(size={"height": s, "width": s}, resample=2, do_rescale=True,
                                        rescale_factor=1 / 255, do_normalize=False)

            def run_image():
                px = proc(images=Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
                model.model.get_image_features(px)

            out["image_seconds"][str(s)] = best(run_image)
        fe = Gemma3nAudioFeatureExtractor()

        def run_audio():
            data = clip.read_bytes()
            x = np.frombuffer(data[44:], "<f4")
            f = fe(x, return_tensors="pt")
            model.model.get_audio_features(f["input_features"], ~f["input_features_mask"])

        out["audio_seconds"] = best(run_audio)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/work/models/towers"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="256,512,768")
    ap.add_argument("--no-reference", action="store_true")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    build = REPO / "build" / "release"
    if not (a.model / "config.json").exists():
        print(f"making {a.model} (tiny text, real towers) ...", file=sys.stderr)
        subprocess.run([str(build / "g3n"), "make-random", "--preset", "tiny", "--towers", "real", "--dtype", "bf16",
                        "--out", str(a.model)], check=True)
    image = REPO / "data" / "samples" / "house.png"
    clip = write_clip(Path("/tmp/media_bench_30s.wav"))
    g = subprocess.run([str(build / "media_bench"), "-m", str(a.model), "--image", str(image), "--audio", str(clip),
                        "--sizes", *map(str, sizes), "-t", str(a.threads), "--repeat", str(a.repeat)],
                       check=True, capture_output=True, text=True)
    g3n = json.loads(g.stdout)
    ref = None if a.no_reference else reference_times(a.model, image, clip, sizes, a.threads, a.repeat)
    rows = [(f"image {s} px", g3n["image_seconds"][str(s)], ref and ref["image_seconds"][str(s)]) for s in sizes]
    rows.append(("audio 30 s (188 tokens)", g3n["audio_seconds"], ref and ref["audio_seconds"]))
    print(f"| encoder ({a.threads} threads) | g3n s | transformers s | reference / g3n |")
    print("| --- | ---: | ---: | ---: |")
    for name, gs, rs in rows:
        print(f"| {name} | {gs:.2f} | {rs:.2f} | {rs / gs:.2f}x |" if rs else f"| {name} | {gs:.2f} | - | - |")
    print(json.dumps({"g3n": g3n, "reference": ref}))


if __name__ == "__main__":
    main()
