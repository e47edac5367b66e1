"""Memory bombs under the pixel limit: budgeted from the header, and a decode process that
runs out of its address space costs one image, not the service. The decode processes also
inherit none of the parent's secrets and answer without pickle."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from consumers.decode import DecodedImage, DecodeLimits, decode_bytes, decode_image
from consumers.decode_processes import DecodeProcesses, decode_answer, encode_answer
from consumers.domain import PermanentError, Reason

MB = 1_000_000
# The bombs: 100 MP each, under the default 100 MP limit, a few hundred KB on disk.
SIDE = 10_000


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("bombs")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        tiff = Image.new("I", (SIDE, SIDE), 70_000)
        tiff.save(folder / "32bit.tif", compression="tiff_adobe_deflate")
        del tiff
        png = Image.new("I;16", (SIDE, SIDE), 1234)
        png.save(folder / "16bit.png")
        del png
    return {
        "32-bit TIFF": (folder / "32bit.tif").read_bytes(),
        "16-bit PNG": (folder / "16bit.png").read_bytes(),
    }


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _pids(pool: DecodeProcesses) -> list[int]:
    return [child.proc.pid for child in pool._children]


def _png(mode: str, size: tuple[int, int], value: int) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, value).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("name", ["32-bit TIFF", "16-bit PNG"])
def test_bombs_are_refused_from_the_header_with_the_decode_process_under_budget(
    bombs: dict[str, bytes], name: str
) -> None:
    data = bombs[name]
    assert len(data) < 1 * MB
    limits = DecodeLimits(formats=("PNG", "TIFF"))  # the default 512 MB decode budget
    with DecodeProcesses(1, 64, limits, memory_bytes=None) as pool:  # no RLIMIT_AS to lean on
        with pytest.raises(PermanentError) as info:
            pool(data)
        peak = _peak_rss(_pids(pool)[0])
    assert info.value.reason is Reason.IMAGE_TOO_LARGE
    assert "needs" in info.value.message  # the byte budget, not the pixel limit
    print(f"{name}: {len(data)} bytes refused; decode process peak RSS {peak / MB:.0f} MB")
    # decoding it would have taken 600-1,300 MB: refused from the header, nothing allocated
    assert peak < 150 * MB


def test_a_decode_process_that_hits_its_memory_limit_costs_one_image(
    bombs: dict[str, bytes],
) -> None:
    """With the header check opened wide, the 16-bit PNG really is decoded, and the child
    runs into its address-space limit: ``image_too_large``, and the next image decodes."""
    limit = 400 * MB
    wide_open = DecodeLimits(formats=("PNG", "TIFF"), max_decode_bytes=10**12)
    good = _png("RGB", (64, 48), 200)
    with DecodeProcesses(1, 32, wide_open, memory_bytes=limit) as pool:
        for name in ("16-bit PNG", "32-bit TIFF"):
            with pytest.raises(PermanentError) as info:
                pool(bombs[name])
            assert info.value.reason is Reason.IMAGE_TOO_LARGE, info.value.message
        image = pool(good)
        assert image.width == 64  # the pool carries on
        peak = _peak_rss(_pids(pool)[0])
    print(f"decode process peak RSS under a {limit / MB:.0f} MB limit: {peak / MB:.0f} MB")


def test_wide_images_within_the_budget_are_decoded_without_wide_copies() -> None:
    data = _png("I;16", (3000, 2000), 65535)
    needed = decode_bytes("I;16", 3000, 2000)
    assert needed == 3000 * 2000 * (2 * 2 + 1 + 4)
    decoded = decode_image(data, 32, DecodeLimits(max_decode_bytes=needed))
    assert (decoded.width, decoded.height) == (3000, 2000)
    assert int(decoded.array.min()) == 255  # 65535 is white
    with pytest.raises(PermanentError) as info:
        decode_image(data, 32, DecodeLimits(max_decode_bytes=needed - 1))
    assert info.value.reason is Reason.IMAGE_TOO_LARGE


def test_decode_processes_inherit_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "TAGFLEET_STORE": "postgresql+psycopg://u:db-secret@db/tags",
        "TAGFLEET_SASL_PLAIN_PASSWORD": "kafka-secret",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_SESSION_TOKEN": "aws-token",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    with DecodeProcesses(2, 32, DecodeLimits()) as pool:
        environments = [Path(f"/proc/{pid}/environ").read_bytes() for pid in _pids(pool)]
        assert pool(_png("RGB", (40, 30), 9)).height == 30
    for environ in environments:
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
        assert not names & set(secrets)
        assert all(value.encode() not in environ for value in secrets.values())
        assert "OPENBLAS_NUM_THREADS" in names


def test_answers_are_a_header_and_pixels_not_pickles() -> None:
    image = DecodedImage(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), 30, 20, "PNG")
    payload = encode_answer(image)
    back = decode_answer(payload)
    assert (back.width, back.height, back.format) == (30, 20, "PNG")
    assert np.array_equal(back.array, image.array)
    with pytest.raises(PermanentError) as info:
        decode_answer(encode_answer(PermanentError(Reason.IMAGE_DECODE_FAILED, "bad é")))
    assert (info.value.reason, info.value.message) == (Reason.IMAGE_DECODE_FAILED, "bad é")
    for broken in (payload[:-1], b"K", b"\x80\x04pickle", b""):
        with pytest.raises(ValueError):
            decode_answer(broken)


_PROBE = """
import ctypes, os
from consumers.hardening import make_undumpable

os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # an unprivileged user from here on (root may read anything)
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # dumpable, as any process this user starts is


def child_reads_parent() -> str:
    read_end, write_end = os.pipe()
    if os.fork() == 0:
        try:
            data = open(f"/proc/{os.getppid()}/environ", "rb").read()
            answer = str(data.count(b"db-secret"))
        except OSError as exc:
            answer = type(exc).__name__
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    os.wait()
    return os.read(read_end, 100).decode()


before = child_reads_parent()
assert make_undumpable()
print(before, "|", child_reads_parent())
"""


def test_a_decode_process_cannot_read_the_services_environment_through_proc() -> None:
    """As an unprivileged user: while the service is dumpable a child reads its secret from
    ``/proc/PPID/environ``; after ``make_undumpable`` (the service calls it at start, before
    any decode process) the file is closed to it."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "TAGFLEET_STORE": "postgresql://u:db-secret@db/t"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    before, after = (part.strip() for part in done.stdout.split("|"))
    assert before == "1"  # the control: readable while dumpable
    assert after == "PermissionError"
