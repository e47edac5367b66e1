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

Frames: an 8-byte big-endian length, then the payload. Request payload: the image bytes.
Answer payload: a pickled ``("ok", DecodedImage)`` or ``("error", reason, message)`` (the
children are this module, started by the parent: the pickles are trusted).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle  # noqa: S403 - answers come from our own child processes
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from consumers import failpoints
from consumers.decode import DecodedImage, DecodeLimits, decode_image, decode_image_full
from consumers.domain import PermanentError, Reason, TransientError
from consumers.logs import configure_logging

_LENGTH = struct.Struct("!Q")
_READY = b"ready"


class ChildDied(Exception):
    """The child exited (crash, kill, out of memory) before answering."""


class ChildTimedOut(Exception):
    """The child did not answer within the decode timeout."""


class _Child:
    """One child process and the parent's ends of its pipes."""

    def __init__(
        self, target: int, limits: DecodeLimits, draft: bool, log: tuple[str, str]
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
            "--log-level",
            log[0],
            "--log-format",
            log[1],
        ]
        if not draft:
            argv.append("--full")
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin: BinaryIO = self.proc.stdin
        self._stdout_fd = self.proc.stdout.fileno()

    def wait_ready(self, timeout_s: float) -> None:
        if self._read_frame(timeout_s) != _READY:
            raise ChildDied("the decode process sent no ready frame")

    def decode(self, data: bytes, timeout_s: float) -> DecodedImage:
        try:
            self._stdin.write(_LENGTH.pack(len(data)))
            self._stdin.write(data)
        except (BrokenPipeError, OSError) as exc:
            raise ChildDied(f"write failed: {exc}") from None
        answer = pickle.loads(self._read_frame(timeout_s))  # noqa: S301 - see the module doc
        if answer[0] == "ok":
            return answer[1]
        raise PermanentError(Reason(answer[1]), answer[2])

    def _read_frame(self, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        header = self._read_exact(_LENGTH.size, deadline)
        return self._read_exact(_LENGTH.unpack(header)[0], deadline)

    def _read_exact(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        left = size
        while left:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._stdout_fd], [], [], remaining)[0]:
                raise ChildTimedOut()
            chunk = os.read(self._stdout_fd, min(left, 1 << 20))
            if not chunk:
                raise ChildDied(f"exit code {self.proc.wait()}")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

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
    ) -> None:
        self._args = (target, limits, draft, log)
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

    def __call__(self, data: bytes) -> DecodedImage:
        child = self._idle.get()
        deaths: list[str] = []
        try:
            if not child.alive():  # its replacement failed to start last time
                child = self._replace(child)
            while len(deaths) < 2:
                try:
                    return child.decode(data, self._timeout_s)
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


def _serve(
    stdin: BinaryIO, stdout: BinaryIO, target: int, limits: DecodeLimits, draft: bool
) -> None:
    decode = decode_image if draft else decode_image_full
    _write_frame(stdout, _READY)
    while True:
        header = stdin.read(_LENGTH.size)
        if len(header) < _LENGTH.size:
            return
        data = stdin.read(_LENGTH.unpack(header)[0])
        failpoints.hit("decode_process")
        try:
            answer: tuple[object, ...] = ("ok", decode(data, target, limits))
        except PermanentError as exc:
            answer = ("error", exc.reason.value, exc.message)
        except Exception as exc:  # noqa: BLE001 - decode_image maps Pillow's; this is a backstop
            answer = ("error", Reason.IMAGE_DECODE_FAILED.value, f"{type(exc).__name__}: {exc}")
        _write_frame(stdout, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="A tagfleet decode process: started by the service, not by hand. Reads"
        " length-framed image bytes on stdin, answers length-framed pickles on stdout."
    )
    parser.add_argument("--target", type=int, required=True)
    parser.add_argument("--max-pixels", type=int, required=True)
    parser.add_argument("--formats", required=True)
    parser.add_argument("--full", action="store_true", help="no JPEG draft (benchmarks)")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    # The parent owns this process: it stops it by closing stdin or killing it, so a Ctrl-C or
    # SIGTERM sent to the whole process group must not fail the images still being decoded.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    limits = DecodeLimits(max_pixels=args.max_pixels, formats=tuple(args.formats.split(",")))
    with contextlib.suppress(BrokenPipeError):  # the parent is gone: nobody awaits the answer
        _serve(sys.stdin.buffer, sys.stdout.buffer, args.target, limits, draft=not args.full)


if __name__ == "__main__":
    main()
