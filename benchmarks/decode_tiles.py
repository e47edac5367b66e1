"""What tiling costs the service's decode: one photo decoded for a 224 px model, draft-scaled
(no tiled function) and full-size with its tiles cut (a function with a 250 px tiling), in the
service's thread and through a decode process (the answer's bytes through the pipe).

python benchmarks/decode_tiles.py [--runs 5] [--target 224] [--tile 250]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

from tqdm import tqdm

from benchmarks.decode_draft import photo
from consumers.decode import DecodedImage, DecodeLimits, decode_image
from consumers.decode_processes import DecodeProcesses, encode_answer
from models.tile_grid import Tiling


def timed(decode: Callable[[bytes], DecodedImage], data: bytes, runs: int) -> float:
    decode(data)  # warm-up (a process's first image, Pillow's plugins)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        decode(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="decodes per variant (default 5)")
    parser.add_argument("--target", type=int, default=224, help="model input side (default 224)")
    parser.add_argument("--tile", type=int, default=250, help="tile side in pixels (default 250)")
    args = parser.parse_args()
    tiling = Tiling(args.tile, 0.25)
    cases = [((1000, 800), 64), ((2000, 1500), 64), ((2000, 1500), 96)]
    print(f"JPEG q90 -> {args.target} px, tiling {args.tile} px / 0.25, median of {args.runs}")
    print("| picture | max_tiles | tiles | draft ms | tiled ms | tiled ms, process | answer MB |")
    print("|---|---|---|---|---|---|---|")
    for (width, height), cap in tqdm(cases, desc="cases", leave=False):
        data = photo(width, height)
        limits = DecodeLimits(max_tiles=cap)
        plain = timed(partial(decode_image, target=args.target, limits=limits), data, args.runs)
        tiled = timed(
            partial(decode_image, target=args.target, limits=limits, tilings=(tiling,)),
            data,
            args.runs,
        )
        with DecodeProcesses(1, args.target, limits, tilings=(tiling,)) as pool:
            through = timed(pool, data, args.runs)
        decoded = decode_image(data, args.target, limits, (tiling,))
        tiles = len(decoded.tiles[0].array)
        answer = len(encode_answer(decoded)) / 1e6
        print(
            f"| {width} x {height} | {cap} | {tiles} ({decoded.tiles[0].used.tile} px)"
            f" | {plain * 1000:.1f} | {tiled * 1000:.1f} | {through * 1000:.1f} | {answer:.1f} |"
        )


if __name__ == "__main__":
    main()
