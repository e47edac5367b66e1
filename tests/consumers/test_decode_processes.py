"""The decode process pool: same answers as in-process decoding, typed errors across the pipe,
and a child that dies or hangs costs one image, never the pool (real child processes)."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from test_decode import encode, halves, noise

from consumers.decode import DecodeLimits, decode_image, decode_image_full
from consumers.decode_processes import DecodeProcesses
from consumers.domain import PermanentError, Reason, TransientError

LIMITS = DecodeLimits()


def images() -> list[bytes]:
    return [
        encode(noise((640, 480), seed=1), "JPEG", quality=90),
        encode(halves((300, 200), (255, 0, 0), (0, 0, 255)), "PNG"),
        encode(noise((96, 64), seed=2).convert("L"), "PNG"),
        encode(Image.new("RGBA", (50, 70), (0, 128, 0, 128)), "WEBP"),
    ]


def pids(pool: DecodeProcesses) -> set[int]:
    return {child.proc.pid for child in pool._children}


def test_answers_equal_in_process_decoding_from_many_threads() -> None:
    blobs = images() * 5
    with DecodeProcesses(2, 64, LIMITS) as pool, ThreadPoolExecutor(4) as threads:
        got = list(threads.map(pool, blobs))
    for blob, image in zip(blobs, got, strict=True):
        want = decode_image(blob, 64, LIMITS)
        assert (image.width, image.height, image.format) == (want.width, want.height, want.format)
        assert image.array.shape == (64, 64, 3)
        assert np.array_equal(image.array, want.array)


def test_full_mode_decodes_without_draft() -> None:
    blob = images()[0]
    with DecodeProcesses(1, 64, LIMITS, draft=False) as pool:
        assert np.array_equal(pool(blob).array, decode_image_full(blob, 64, LIMITS).array)


def test_permanent_errors_keep_their_reason_and_message() -> None:
    tight = DecodeLimits(max_pixels=1000, formats=("PNG",))
    with DecodeProcesses(1, 32, tight) as pool:
        for data, expected in [
            (b"", Reason.EMPTY_OBJECT),
            (b"not an image at all", Reason.UNSUPPORTED_FORMAT),
            (encode(noise((40, 40)), "JPEG"), Reason.UNSUPPORTED_FORMAT),
            (encode(noise((40, 40)), "PNG"), Reason.IMAGE_TOO_LARGE),
            (encode(noise((20, 20)), "PNG")[:60], Reason.IMAGE_DECODE_FAILED),
        ]:
            with pytest.raises(PermanentError) as info:
                pool(data)
            assert info.value.reason is expected, data[:20]
            assert info.value.message
        assert pool(encode(noise((20, 20)), "PNG")).array.shape == (32, 32, 3)


def test_a_child_killed_between_images_is_replaced_and_the_image_still_decoded() -> None:
    blob = images()[1]
    with DecodeProcesses(1, 32, LIMITS) as pool:
        (first,) = pids(pool)
        os.kill(first, signal.SIGKILL)
        image = pool(blob)
        assert np.array_equal(image.array, decode_image(blob, 32, LIMITS).array)
        assert pool.size == 1 and pids(pool) != {first}


def test_an_image_that_kills_two_children_is_dead_lettered_and_the_pool_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAGFLEET_FAILPOINTS", "decode_process=kill")
    with DecodeProcesses(1, 32, LIMITS) as pool:
        before = pids(pool)
        with pytest.raises(PermanentError) as info:
            pool(images()[1])
        assert info.value.reason is Reason.IMAGE_DECODE_FAILED
        assert "died on this image twice" in info.value.message
        assert pool.size == 1 and not pids(pool) & before
        (child,) = pool._children
        assert child.proc.poll() is None, "the replacement must be alive and waiting"


def test_a_hanging_decode_is_killed_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGFLEET_FAILPOINTS", "decode_process=sleep:60")
    with DecodeProcesses(1, 32, LIMITS, timeout_s=1.0) as pool:
        (hung,) = pids(pool)
        with pytest.raises(PermanentError) as info:
            pool(images()[1])
        assert info.value.reason is Reason.IMAGE_DECODE_FAILED
        assert "longer than 1 s" in info.value.message
        with pytest.raises(ProcessLookupError):
            os.kill(hung, 0)
        assert pool.size == 1 and pids(pool) != {hung}


def test_close_kills_every_child() -> None:
    pool = DecodeProcesses(2, 32, LIMITS)
    children = list(pool._children)
    pool.close()
    assert all(child.proc.returncode is not None for child in children)
    with pytest.raises(RuntimeError, match="closed"):
        pool._spawn()


def test_a_child_that_cannot_be_restarted_is_a_transient_fault_and_is_retried_later() -> None:
    blob = images()[1]
    with DecodeProcesses(1, 32, LIMITS) as pool:
        (first,) = pids(pool)
        good_args = pool._args
        broken = ("NO-SUCH-LEVEL", "json")  # children die at start
        pool._args = (*good_args[:3], broken, *good_args[4:])
        os.kill(first, signal.SIGKILL)
        with pytest.raises(TransientError, match="could not restart a decode process"):
            pool(blob)
        pool._args = good_args
        image = pool(blob)  # the next call starts a working child
        assert np.array_equal(image.array, decode_image(blob, 32, LIMITS).array)
        assert pool.size == 1
