"""The service stops at start-up, in one log line, when it keeps embeddings where it cannot
write them; without the start-up check a store that opens but refuses writes (a read-only
folder, a bucket the credentials may only read) failed every batch as a transient error:
retried, the partitions paused, the consumer stalled."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from consumers.domain import AssetResult, TransientError
from consumers.embeddings import open_embedding_sink
from consumers.metrics import Metrics
from consumers.pipeline import EXIT_FATAL
from consumers.readiness import Readiness
from consumers.service import serve
from consumers.settings import Settings


def _serve(tmp_path: Path, **values: object) -> int:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'tags.db'}",
        fleet=str(tmp_path / "no-fleet.yaml"),
        **values,  # type: ignore[arg-type]
    )
    return serve(settings, Metrics(), Readiness(), threading.Event())


def _missing_bucket() -> str:
    return f"s3://tagfleet-missing-{uuid.uuid4().hex[:12]}/embeddings"


# an existing folder that no one, root included, may write: a read-only mount's stand-in
READ_ONLY = "/sys/fs"
needs_read_only = pytest.mark.skipif(not Path(READ_ONLY).is_dir(), reason="no sysfs here")


@needs_read_only
def test_a_read_only_folder_opens_then_fails_each_batch_as_a_transient_error() -> None:
    """What the service did before the check: the sink opens, every write is retried."""
    sink = open_embedding_sink(READ_ONLY)
    assert sink is not None
    result = AssetResult(
        asset_id="s3://photos/a.jpg",
        uri="s3://photos/a.jpg",
        etag=None,
        width=8,
        height=8,
        functions={},
        source=None,
        processed_at=datetime.now(UTC),
        content_hash="ab" * 32,
        embeddings={"bb": np.ones(8, dtype=np.float32)},
    )
    with pytest.raises(TransientError, match="embedding store"):
        sink.write([result])


@pytest.mark.integration
def test_a_bucket_that_does_not_exist_stops_the_service_at_start_up(
    s3: object, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = _missing_bucket()
    assert _serve(tmp_path, embeddings=location) == EXIT_FATAL
    assert f"cannot write the embedding store {location}" in caplog.text
    assert "cannot load the fleet" not in caplog.text


@needs_read_only
def test_a_read_only_folder_stops_the_service_at_start_up_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert _serve(tmp_path, embeddings=READ_ONLY) == EXIT_FATAL
    lines = [r for r in caplog.records if "embedding store" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelname == "CRITICAL"
    assert f"cannot write the embedding store {READ_ONLY}" in lines[0].getMessage()
    assert "TAGFLEET_STORE_EMBEDDINGS=false" in lines[0].getMessage()
    assert "cannot load the fleet" not in caplog.text  # stopped before the fleet's loading


def test_a_folder_that_cannot_be_made_stops_the_service_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    assert _serve(tmp_path, embeddings=str(tmp_path / "a-file" / "embeddings")) == EXIT_FATAL
    assert "cannot write the embedding store" in caplog.text


def test_a_writable_folder_passes_the_check_and_keeps_no_scratch_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = tmp_path / "embeddings"
    assert _serve(tmp_path, embeddings=str(location)) == EXIT_FATAL  # the missing fleet
    assert "cannot write the embedding store" not in caplog.text
    assert "cannot load the fleet" in caplog.text
    assert location.is_dir() and not list(location.iterdir())


def test_embeddings_off_skips_the_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    bad = str(tmp_path / "a-file" / "embeddings")
    assert _serve(tmp_path, embeddings=bad, store_embeddings=False) == EXIT_FATAL
    assert "embedding store" not in caplog.text
    assert "cannot load the fleet" in caplog.text
