"""The decoder cuts the tiles of a fleet's tiled functions: from the oriented original, at the
function's tile size, resized to the model input, at most ``max_tiles`` per tiling; in the
service's thread or through the decode processes' answers."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from consumers.decode import DecodeLimits, decode_bytes, decode_image, tiles_bytes
from consumers.decode_processes import DecodeProcesses, decode_answer, encode_answer
from consumers.domain import PermanentError, Reason
from models.preprocess import preprocess_image
from models.tile_grid import Tiling, cut_tiles

LIMITS = DecodeLimits()


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def texture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_tiles_are_cut_from_the_original_at_the_tile_size_and_resized_to_the_input() -> None:
    image = texture(400, 300)
    tiling = Tiling(100, 0.25)
    decoded = decode_image(encode(image, "PNG"), 32, LIMITS, tilings=(tiling,))
    (tiles,) = decoded.tiles
    assert tiles.tiling == tiles.used == tiling
    assert tiles.array.shape == (5 * 4, 32, 32, 3)  # stride 75: 0..300 and 0..200
    assert np.array_equal(tiles.array, cut_tiles(image, tiling, 32))
    assert tiles.boxes == tuple(tiling.boxes(400, 300))
    assert tiles.boxes[0] == (0, 0, 100, 100) and tiles.boxes[-1] == (300, 200, 400, 300)
    # the whole image as before, beside its tiles
    assert np.array_equal(decoded.array, preprocess_image(image, 32))
    assert (decoded.width, decoded.height) == (400, 300)


def test_without_a_tiling_the_decode_stays_draft_scaled_and_cuts_nothing() -> None:
    data = encode(texture(800, 600), "JPEG", quality=90)
    plain = decode_image(data, 64, LIMITS)
    assert plain.tiles == ()
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (64, 64))
    assert drafted.size == (100, 75)  # the DCT scale of 1/8 still covers 64
    assert np.array_equal(plain.array, preprocess_image(drafted.convert("RGB"), 64))
    tiled = decode_image(data, 64, LIMITS, tilings=(Tiling(200),))
    full = Image.open(io.BytesIO(data)).convert("RGB")  # tiles need the full-size pixels
    assert np.array_equal(tiled.tiles[0].array, cut_tiles(full, Tiling(200), 64))


def test_tiles_follow_the_exif_orientation() -> None:
    image = Image.new("RGB", (300, 200), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 100, 100))  # the stored top-left corner is red
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the red corner goes top-right
    decoded = decode_image(encode(image, "PNG", exif=exif), 16, LIMITS, tilings=(Tiling(100, 0),))
    assert (decoded.width, decoded.height) == (200, 300)
    (tiles,) = decoded.tiles
    assert tiles.boxes == tuple(Tiling(100, 0).boxes(200, 300))
    red = [box for box, tile in zip(tiles.boxes, tiles.array, strict=True) if tile[8, 8, 0] > 200]
    assert red == [(100, 0, 200, 100)]


def test_the_tile_cap_cuts_fewer_larger_tiles_covering_the_whole_image() -> None:
    image = texture(1000, 800)
    tiling = Tiling(100, 0.25)
    assert tiling.count(1000, 800) == 13 * 11  # over the cap below
    limits = DecodeLimits(max_tiles=16)
    (tiles,) = decode_image(encode(image, "PNG"), 32, limits, tilings=(tiling,)).tiles
    assert tiles.tiling == tiling and tiles.used.overlap == 0.25
    assert len(tiles.array) == len(tiles.boxes) <= 16
    assert tiles.used.tile > 100 and Tiling(tiles.used.tile - 1, 0.25).count(1000, 800) > 16
    assert all(x2 - x1 == y2 - y1 == tiles.used.tile for x1, y1, x2, y2 in tiles.boxes)
    covered = np.zeros((800, 1000), dtype=bool)
    for x1, y1, x2, y2 in tiles.boxes:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert np.array_equal(tiles.array, cut_tiles(image, tiles.used, 32))


def test_the_tiles_count_in_the_decode_byte_budget() -> None:
    data = encode(texture(400, 300), "PNG")
    tilings = (Tiling(100),)
    enough_for_the_image = decode_bytes("RGB", 400, 300) + 1
    limits = DecodeLimits(max_decode_bytes=enough_for_the_image, max_tiles=8)
    assert decode_image(data, 32, limits).tiles == ()
    with pytest.raises(PermanentError) as info:
        decode_image(data, 32, limits, tilings=tilings)
    assert info.value.reason is Reason.IMAGE_TOO_LARGE
    budget = enough_for_the_image + tiles_bytes(tilings, 32, 8)
    fits = DecodeLimits(max_decode_bytes=budget, max_tiles=8)
    assert len(decode_image(data, 32, fits, tilings=tilings).tiles[0].array) <= 8


def test_the_decode_processes_answer_the_tiles() -> None:
    tilings = (Tiling(100, 0.25), Tiling(150, 0.0))
    data = encode(texture(400, 300, seed=3), "PNG")
    here = decode_image(data, 32, LIMITS, tilings=tilings)
    with DecodeProcesses(1, 32, LIMITS, tilings=tilings) as pool:
        there = pool(data)
    assert np.array_equal(there.array, here.array)
    assert [t.tiling for t in there.tiles] == list(tilings)
    for mine, theirs in zip(here.tiles, there.tiles, strict=True):
        assert theirs.used == mine.used and theirs.boxes == mine.boxes
        assert np.array_equal(theirs.array, mine.array)
        assert theirs.array.flags.writeable  # a view of the answer's buffer, not a copy


def test_an_answer_whose_tiles_do_not_match_its_header_is_refused() -> None:
    decoded = decode_image(encode(texture(200, 200), "PNG"), 16, LIMITS, tilings=(Tiling(100),))
    payload = encode_answer(decoded)
    roundtrip = decode_answer(payload)
    assert np.array_equal(roundtrip.tiles[0].array, decoded.tiles[0].array)
    for broken in (payload[:-1], payload + b"\0"):
        with pytest.raises(ValueError, match="answer"):
            decode_answer(broken)


def test_a_request_gets_the_tiles_of_the_functions_it_asks_for_and_no_others() -> None:
    one, other = Tiling(100, 0.25), Tiling(150, 0.0)
    data = encode(texture(400, 300, seed=4), "JPEG", quality=90)
    drafted = decode_image(data, 32, LIMITS)
    with DecodeProcesses(1, 32, LIMITS, tilings=(one, other)) as pool:
        assert [t.tiling for t in pool(data).tiles] == [one, other]  # None: every tiling
        assert [t.tiling for t in pool(data, [other]).tiles] == [other]
        nothing = pool(data, [])
        with pytest.raises(ValueError, match="cut"):
            pool(data, [Tiling(99)])
    assert nothing.tiles == () and np.array_equal(nothing.array, drafted.array)  # drafted


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_the_decoder_cuts_the_tilings_of_the_requested_functions(mode: str) -> None:
    from consumers.decoding import open_decoder
    from consumers.settings import TaggingSettings
    from models.settings import from_values

    one, other = Tiling(100, 0.25), Tiling(150, 0.0)
    settings = from_values(TaggingSettings, decode_mode=mode, decode_workers=1)
    tiled = {"marks": (one,), "dents": (one, other)}
    data = encode(texture(400, 300, seed=5), "PNG")
    with open_decoder(settings, 32, LIMITS, tiled=tiled) as decode:
        assert decode.tilings == (one, other)
        assert [t.tiling for t in decode(data).tiles] == [one, other]
        assert [t.tiling for t in decode.for_functions(data, None).tiles] == [one, other]
        assert [t.tiling for t in decode.for_functions(data, ["marks", "x"]).tiles] == [one]
        assert [t.tiling for t in decode.for_functions(data, ["dents"]).tiles] == [one, other]
        assert decode.for_functions(data, ["colour"]).tiles == ()  # read whole: no tiles cut
