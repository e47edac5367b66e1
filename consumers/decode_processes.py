"""Image decoding in child processes.

Why: a decoder that crashes, is killed for memory or hangs on a hostile image would otherwise
take the whole service down, and the message would come back after the restart and do it
again (a poison pill). Here it costs that image. Decoding also runs outside the service's
GIL, which the fetch threads (boto3), the consume loop and the inference stage share: on a
many-core host the GIL-held parts of decoding would cap a pool of threads. The price is one
copy of each image through a pipe (``docs/benchmarks.md``). Each child (``python -m
consumers.decode_processes``) imports Pillow and numpy only, reads one request at a time on
its stdin and answers on its stdout. The parent keeps a pool of idle children; a caller takes
one, sends the bytes, waits for the answer and gives the child back.

Frames: an 8-byte big-endian length, then the payload. Request payload: the number of tilings
to cut (one byte; 255: every tiling the process was started with), their places in that list
(a byte each), then the image bytes.
Answer payload: ``K`` + a fixed header (width, height, rows, columns, channels, format, number
of tile sets) + the array's bytes + each tile set (a fixed header: the tiling asked for, the
tiling cut, the number of tiles and their side; then each tile's box, then the tiles' bytes),
or ``E`` + the reason code + a newline + the message. No pickle: a child that
a hostile image took over cannot make the parent run code by what it answers; the parent
checks the header against the payload's size.

Isolation: each child starts with a minimal environment (no database URL, Kafka password or
cloud keys of the parent: :func:`child_environment`) and under an address-space limit
(``RLIMIT_AS``): an image that needs more fails with ``MemoryError`` in that child
(``image_too_large``), instead of the kernel's OOM killer taking the service.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import queue
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import BinaryIO, cast

import numpy as np

from consumers import failpoints
from consumers.decode import DecodedImage, DecodeLimits, decode_image, decode_image_full
from consumers.domain import PermanentError, Reason, TransientError
from consumers.logs import configure_logging
from models.tile_grid import TileSet, Tiling

_LENGTH = struct.Struct("!Q")
_READY = b"ready"
# width, height, rows, columns, channels, format, tile sets
_IMAGE = struct.Struct("!IIHHB16sB")
_TILES = struct.Struct("!IdIdHH")  # tiling (tile, overlap), tiling cut, tiles, their side
_BOX = struct.Struct("!IIII")
_EVERY = 255  # a request's tiling count: every tiling of the process
_MAX_ERROR_FRAME = 64 * 1024
# What a child inherits: where to find Python and our code, the locale, the OpenBLAS settings
# some processors need, and the test-only failpoints. Nothing else of the parent's.
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_TEST_ONLY = ("TAGFLEET_FAILPOINTS",)


def child_environment(parent: dict[str, str]) -> dict[str, str]:
    """The environment of a decode process: :data:`_INHERITED` from ``parent`` and one
    thread per numeric library (the pool is the parallelism)."""
    env = {k: parent[k] for k in (*_INHERITED, *_TEST_ONLY) if k in parent}
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def encode_answer(answer: DecodedImage | PermanentError) -> bytes:
    """The answer frame's payload (see the module docstring)."""
    if isinstance(answer, PermanentError):
        return (
            b"E" + answer.reason.value.encode() + b"\n" + answer.message.encode("utf-8", "replace")
        )
    array = np.ascontiguousarray(answer.array, dtype=np.uint8)
    rows, columns, channels = array.shape
    header = _IMAGE.pack(
        answer.width,
        answer.height,
        rows,
        columns,
        channels,
        answer.format.encode()[:16],
        len(answer.tiles),
    )
    parts = [b"K", header, array.tobytes()]
    for tile_set in answer.tiles:
        tiles = np.ascontiguousarray(tile_set.array, dtype=np.uint8)
        asked, used = tile_set.tiling, tile_set.used
        parts.append(
            _TILES.pack(asked.tile, asked.overlap, used.tile, used.overlap, *tiles.shape[:2])
        )
        parts += [_BOX.pack(*box) for box in tile_set.boxes]
        parts.append(tiles.tobytes())
    return b"".join(parts)


def decode_answer(payload: bytes | bytearray) -> DecodedImage:
    """The image of an answer payload; raises the :class:`PermanentError` it carries, or
    ``ValueError`` for a payload that is not an answer. The arrays are views of ``payload``
    (writable when it is a ``bytearray``), not copies."""
    kind, body = bytes(payload[:1]), memoryview(payload)[1:]
    if kind == b"E":
        reason, _, message = bytes(body).partition(b"\n")
        raise PermanentError(Reason(reason.decode()), message.decode("utf-8", "replace"))
    if kind != b"K" or len(body) < _IMAGE.size:
        raise ValueError("not a decode answer")
    width, height, rows, columns, channels, fmt, sets = _IMAGE.unpack_from(body)
    at = _IMAGE.size + rows * columns * channels
    if len(body) < at:
        raise ValueError("the answer's pixels do not match its header")
    array = np.frombuffer(body, dtype=np.uint8, count=at - _IMAGE.size, offset=_IMAGE.size)
    tiles = []
    for _ in range(sets):
        if len(body) < at + _TILES.size:
            raise ValueError("the answer's tiles do not match its header")
        tile, overlap, used_tile, used_overlap, count, side = _TILES.unpack_from(body, at)
        at += _TILES.size
        size = count * (_BOX.size + side * side * 3)
        if len(body) < at + size:
            raise ValueError("the answer's tiles do not match their header")
        boxes = tuple(_BOX.unpack_from(body, at + i * _BOX.size) for i in range(count))
        at += count * _BOX.size
        pixels = np.frombuffer(body, dtype=np.uint8, count=count * side * side * 3, offset=at)
        at += count * side * side * 3
        tiles.append(
            TileSet(
                Tiling(tile, overlap),
                Tiling(used_tile, used_overlap),
                pixels.reshape(count, side, side, 3),
                boxes,
            )
        )
    if at != len(body):
        raise ValueError("the answer is longer than its header says")
    return DecodedImage(
        array=array.reshape(rows, columns, channels),
        width=width,
        height=height,
        format=fmt.rstrip(b"\0").decode(),
        tiles=tuple(tiles),
    )


class ChildDied(Exception):
    """The child exited (crash, kill, out of memory) before answering."""


class ChildTimedOut(Exception):
    """The child did not answer within the decode timeout."""


class _Child:
    """One child process and the parent's ends of its pipes."""

    def __init__(
        self,
        target: int,
        limits: DecodeLimits,
        draft: bool,
        log: tuple[str, str],
        memory_bytes: int | None,
        tilings: tuple[Tiling, ...] = (),
    ) -> None:
        argv = [
            sys.executable,
            "-m",
            "consumers.decode_processes",
            "--target",
            str(target),
            "--max-pixels",
            str(limits.max_pixels),
            "--formats",
            ",".join(limits.formats),
            "--max-decode-bytes",
            str(limits.max_decode_bytes),
            "--max-tiles",
            str(limits.max_tiles),
            "--log-level",
            log[0],
            "--log-format",
            log[1],
        ]
        if not draft:
            argv.append("--full")
        if memory_bytes:
            argv += ["--memory-bytes", str(memory_bytes)]
        for tiling in tilings:
            argv += ["--tiling", f"{tiling.tile}:{tiling.overlap!r}"]
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=child_environment(dict(os.environ)),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = cast(BinaryIO, self.proc.stdin)  # Popen types its pipes IO[bytes]
        self._stdout_fd = self.proc.stdout.fileno()
        # The largest answer an honest child sends: an image of target x target x 3 and its
        # tiles, or an error; a child that announces more was taken over and must not fill
        # our memory.
        tiles = len(tilings) * (_TILES.size + limits.max_tiles * (_BOX.size + target * target * 3))
        self._max_frame = 1 + _IMAGE.size + target * target * 3 + tiles + _MAX_ERROR_FRAME

    def wait_ready(self, timeout_s: float) -> None:
        if self._read_frame(timeout_s) != _READY:
            raise ChildDied("the decode process sent no ready frame")

    def decode(self, data: bytes, timeout_s: float, tilings: bytes) -> DecodedImage:
        """``tilings``: the request's tiling header (:func:`tiling_header`)."""
        try:
            self._stdin.write(_LENGTH.pack(len(tilings) + len(data)))
            self._stdin.write(tilings)
            self._stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            raise ChildDied(f"write failed: {exc}") from None
        try:
            return decode_answer(self._read_frame(timeout_s))
        except ValueError as exc:
            raise ChildDied(f"an answer the parent cannot read ({exc})") from None

    def _read_frame(self, timeout_s: float) -> bytearray:
        deadline = time.monotonic() + timeout_s
        header = self._read_exact(_LENGTH.size, deadline)
        size = _LENGTH.unpack(header)[0]
        if size > self._max_frame:
            raise ChildDied(
                f"the decode process announced {size} bytes (at most {self._max_frame})"
            )
        return self._read_exact(size, deadline)

    def _read_exact(self, size: int, deadline: float) -> bytearray:
        """``size`` bytes read straight into one buffer (the arrays of the answer are views
        of it: no copy, and writable)."""
        buffer = bytearray(size)
        view, done = memoryview(buffer), 0
        while done < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._stdout_fd], [], [], remaining)[0]:
                raise ChildTimedOut()
            got = os.readv(self._stdout_fd, [view[done : done + min(size - done, 1 << 20)]])
            if not got:
                raise ChildDied(f"exit code {self.proc.wait()}")
            done += got
        return buffer

    def alive(self) -> bool:
        return self.proc.poll() is None and not self._stdin.closed

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stdin.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class DecodeProcesses:
    """A pool of ``size`` decode processes, callable as ``decode(data) -> DecodedImage``.

    ``memory_bytes`` is each child's address-space limit (``RLIMIT_AS``; None: none).
    ``tilings``: the tiles each image's answer carries besides the whole image
    (:func:`consumers.decode.decode_image`).

    The children log (failpoints, Pillow's warnings) to the service's stderr at ``log`` =
    (level, format).

    Thread-safe: each call borrows one idle child (waiting for one if all are busy). A child
    that dies on an image is replaced and the image is tried once more in the new child; if
    that one dies too, the image is at fault (``image_decode_failed``). A child that does not
    answer within ``timeout_s`` is killed and replaced, and the image is dead-lettered with
    ``image_decode_failed``: a decoder that hangs on it would hang again.
    """

    def __init__(
        self,
        size: int,
        target: int,
        limits: DecodeLimits,
        timeout_s: float = 60.0,
        draft: bool = True,
        start_timeout_s: float = 60.0,
        log: tuple[str, str] = ("WARNING", "json"),
        memory_bytes: int | None = None,
        tilings: tuple[Tiling, ...] = (),
    ) -> None:
        self._args = (target, limits, draft, log, memory_bytes, tilings)
        self._tilings = tilings
        self._timeout_s = timeout_s
        self._idle: queue.Queue[_Child] = queue.Queue()
        self._lock = threading.Lock()
        self._children: set[_Child] = set()
        self._closed = False
        started = [self._spawn() for _ in range(size)]
        try:
            for child in started:
                child.wait_ready(start_timeout_s)
        except (ChildDied, ChildTimedOut) as exc:
            self.close()
            raise RuntimeError(
                f"a decode process did not start ({type(exc).__name__}: {exc}); its error is on"
                " stderr above; set TAGFLEET_DECODE_MODE=thread to decode in the service"
                " process instead"
            ) from None
        for child in started:
            self._idle.put(child)

    @property
    def size(self) -> int:
        return len(self._children)

    def __call__(self, data: bytes, tilings: Sequence[Tiling] | None = None) -> DecodedImage:
        """Decode ``data``; ``tilings``: the pool's tilings to cut for it (``None``: all of
        them; none: the draft-scaled whole image alone)."""
        header = tiling_header(self._tilings, tilings)
        child = self._idle.get()
        deaths: list[str] = []
        try:
            if not child.alive():  # its replacement failed to start last time
                child = self._replace(child)
            while len(deaths) < 2:
                try:
                    return child.decode(data, self._timeout_s, header)
                except ChildDied as exc:
                    deaths.append(str(exc))
                    child = self._replace(child)
            raise PermanentError(
                Reason.IMAGE_DECODE_FAILED,
                f"the decoder process died on this image twice ({'; '.join(deaths)})",
            )
        except ChildTimedOut:
            child = self._replace(child)
            raise PermanentError(
                Reason.IMAGE_DECODE_FAILED,
                f"decoding took longer than {self._timeout_s:g} s (the decoder was killed)",
            ) from None
        finally:
            self._idle.put(child)

    def close(self) -> None:
        """Kill every child (idempotent); calls after this fail."""
        with self._lock:
            self._closed = True
            children, self._children = self._children, set()
        for child in children:
            child.kill()

    def __enter__(self) -> DecodeProcesses:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _spawn(self) -> _Child:
        with self._lock:
            if self._closed:
                raise RuntimeError("the decode processes are closed")
            child = _Child(*self._args)
            self._children.add(child)
            return child

    def _replace(self, child: _Child) -> _Child:
        """Kill ``child`` and start another; a failed start is a :class:`TransientError` (the
        image is not at fault: it is fetched and decoded again later)."""
        with self._lock:
            self._children.discard(child)
        child.kill()
        fresh = None
        try:
            fresh = self._spawn()
            fresh.wait_ready(self._timeout_s)
        except (ChildDied, ChildTimedOut, OSError, RuntimeError) as exc:
            if fresh is not None:
                with self._lock:
                    self._children.discard(fresh)
                fresh.kill()
            raise TransientError(
                f"could not restart a decode process ({type(exc).__name__}: {exc})"
            ) from None
        return fresh


def tiling_header(every: tuple[Tiling, ...], wanted: Sequence[Tiling] | None) -> bytes:
    """A request's tiling header: ``wanted`` by their places in ``every`` (the tilings the
    process was started with); ``None``: all of them."""
    if wanted is None:
        return bytes([_EVERY])
    try:
        places = sorted({every.index(t) for t in wanted})
    except ValueError:
        raise ValueError(f"the decode processes cut {every}, not {tuple(wanted)}") from None
    return bytes([len(places), *places])


def _serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    target: int,
    limits: DecodeLimits,
    draft: bool,
    tilings: tuple[Tiling, ...] = (),
) -> None:
    decode = decode_image if draft else decode_image_full
    _write_frame(stdout, _READY)
    while True:
        header = stdin.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return
        try:
            data = stdin.read(_LENGTH.unpack(header)[0])
        except MemoryError:
            return  # no room even for the request: exit; the parent starts a fresh process
        failpoints.hit("decode_process")
        answer: DecodedImage | PermanentError
        try:
            count = data[0]
            wanted = tilings if count == _EVERY else tuple(tilings[i] for i in data[1 : 1 + count])
            skip = 1 if count == _EVERY else 1 + count
            answer = decode(data[skip:], target, limits, wanted)
        except PermanentError as exc:
            answer = exc
        except MemoryError:
            answer = PermanentError(
                Reason.IMAGE_TOO_LARGE, "out of memory decoding it (the decode process's limit)"
            )
            gc.collect()
        except Exception as exc:  # noqa: BLE001 - decode_image maps Pillow's; this is a backstop
            answer = PermanentError(Reason.IMAGE_DECODE_FAILED, f"{type(exc).__name__}: {exc}")
        del data
        try:
            payload = encode_answer(answer)
        except MemoryError:
            payload = encode_answer(PermanentError(Reason.IMAGE_TOO_LARGE, "out of memory"))
        _write_frame(stdout, payload)


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A tagfleet decode process: started by the service, not by hand. Reads"
        " length-framed image bytes on stdin, answers length-framed images on stdout."
    )
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--max-pixels", type=int, required=True)
    parser.add_argument("--formats", required=True)
    parser.add_argument("--max-decode-bytes", type=int, default=DecodeLimits().max_decode_bytes)
    parser.add_argument("--memory-bytes", type=int, default=0, help="RLIMIT_AS of this process")
    parser.add_argument("--full", action="store_true", help="no JPEG draft (benchmarks)")
    parser.add_argument(
        "--max-tiles", type=int, default=DecodeLimits().max_tiles, help="tiles per tiling"
    )
    parser.add_argument(
        "--tiling",
        action="append",
        default=[],
        metavar="TILE:OVERLAP",
        help="also cut each image's tiles for this tiling (repeatable)",
    )
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    # The parent owns this process: it stops it by closing stdin or killing it, so a Ctrl-C or
    # SIGTERM sent to the whole process group must not fail the images still being decoded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_bytes, args.memory_bytes))
    limits = DecodeLimits(
        max_pixels=args.max_pixels,
        formats=tuple(args.formats.split(",")),
        max_decode_bytes=args.max_decode_bytes,
        max_tiles=args.max_tiles,
    )
    tilings = tuple(
        Tiling(int(tile), float(overlap))
        for tile, overlap in (spec.split(":") for spec in args.tiling)
    )
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nobody awaits the answer
        _serve(sys.stdin.buffer, sys.stdout.buffer, args.target, limits, not args.full, tilings)


if __name__ == "__main__":
    main()
