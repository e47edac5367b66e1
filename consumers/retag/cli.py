"""``tagfleet retag FUNCTION`` and ``tagfleet taxonomy set|show|clear`` (registered by
consumers.cli)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.retag.settings import RetagOptions
from consumers.settings import KafkaSettings, StoreSettings
from models.options import Options, add_options

_RETAG = """\
Draw FUNCTION's tags again from the stored raw scores (no image is fetched, no model is loaded)
with new thresholds (--threshold LABEL=0.4, repeatable; --thresholds FILE; --target-precision P
calibrated on people's labels) and/or a taxonomy (--taxonomy FILE: model labels to DAM terms,
synonyms, parents, dropped labels). The new tag set is written with its provenance (tag_source
retag, mapping_version: the content hash of the taxonomy and thresholds), the mapping becomes
the active one (the consumer applies it to new results), and a result event is published for
every asset whose effective tags changed, and only those. docs/library.md, "Retag and taxonomy".
"""


def register(commands: Any) -> None:
    """Add the commands to ``tagfleet``'s subparsers."""
    p = commands.add_parser(
        "retag",
        help="redraw a function's tags from the stored scores: thresholds, taxonomy; no model",
        description=_RETAG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("function", metavar="FUNCTION", help="the function whose tags to redraw")
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="a label's threshold (0..1), repeatable; '*=VALUE' for every label without one",
    )
    add_options(p, [RetagOptions, StoreSettings, KafkaSettings])
    p.set_defaults(handler=_run_retag)

    t = commands.add_parser(
        "taxonomy",
        help="the active taxonomy: model labels to DAM terms (set, show, clear)",
        description="The taxonomy the consumer and retag put every function's labels through:"
        " terms, synonyms, parents (ancestors added) and dropped labels (docs/library.md)."
        " Setting it changes new results; `tagfleet retag FUNCTION` redraws the stored ones.",
    )
    sub = t.add_subparsers(dest="taxonomy_command", metavar="TAXONOMY_COMMAND", required=True)
    put = sub.add_parser("set", help="validate FILE (YAML or JSON) and make it the active one")
    put.add_argument("file", metavar="FILE", help="the taxonomy file")
    add_options(put, [StoreSettings])
    put.set_defaults(handler=_run_set)
    show = sub.add_parser("show", help="the active taxonomy and thresholds, as JSON")
    add_options(show, [StoreSettings])
    show.set_defaults(handler=_run_show)
    clear = sub.add_parser("clear", help="no active taxonomy (functions' thresholds stay)")
    add_options(clear, [StoreSettings])
    clear.set_defaults(handler=_run_clear)


def _error(command: str, message: str) -> int:
    print(f"tagfleet {command}: error: {message}", file=sys.stderr)
    return 2


def _open_store(command: str, options: Options) -> Any:
    """The store, at this code's schema; None (the reason printed) when it is not."""
    from consumers.store import TagStore
    from consumers.store.errors import SchemaMissing

    store = TagStore(options[StoreSettings].store_url())
    try:
        store.verify_schema()
    except SchemaMissing as exc:
        store.close()
        _error(command, str(exc))
        return None
    return store


def _run_retag(args: argparse.Namespace, options: Options) -> int:
    from consumers.domain import TransientError
    from consumers.ports import RecordRejected
    from consumers.retag.precision import calibrate
    from consumers.retag.run import retag
    from consumers.retag.taxonomy import (
        MappingFileError,
        load_taxonomy,
        load_thresholds,
        mapping_version,
        parse_taxonomy,
        parse_threshold_flags,
    )
    from consumers.retry import GaveUp
    from consumers.store.tagsets import TAXONOMY_SCOPE, ActiveMapping

    opts = options[RetagOptions]
    try:
        taxonomy = load_taxonomy(Path(opts.taxonomy)) if opts.taxonomy else None
        from_file = load_thresholds(Path(opts.thresholds)) if opts.thresholds else {}
        from_flags = parse_threshold_flags(args.threshold)
    except MappingFileError as exc:
        return _error("retag", str(exc))
    store = _open_store("retag", options)
    if store is None:
        return 2
    producer = None
    try:
        active = store.active_mappings()
        thresholds: dict[str, float] = {}
        if not opts.replace_thresholds and args.function in active:
            thresholds.update(active[args.function].thresholds)
        thresholds.update(from_file)
        if opts.target_precision is not None:
            found = calibrate(
                store.labelled_results(args.function, opts.tenant),
                opts.target_precision,
                opts.min_labels,
            )
            for label, reason in found.skipped.items():
                print(f"tagfleet retag: {label}: threshold kept: {reason}", file=sys.stderr)
            if not found.thresholds:
                print(
                    "tagfleet retag: no label has enough people's labels for"
                    f" --target-precision {opts.target_precision}; thresholds kept",
                    file=sys.stderr,
                )
            for label, limit in found.thresholds.items():
                print(
                    f"tagfleet retag: {label}: threshold {limit:.4f} (precision"
                    f" {found.precision[label]:.3f} on its labels)",
                    file=sys.stderr,
                )
            thresholds.update(found.thresholds)
        thresholds.update(from_flags)
        if taxonomy is None and TAXONOMY_SCOPE in active:
            stored = active[TAXONOMY_SCOPE].taxonomy
            taxonomy = None if stored is None else parse_taxonomy(stored, "the active taxonomy")
        if not opts.dry_run:
            if opts.results_topic:  # before anything is activated
                try:
                    producer = _producer(options[KafkaSettings])
                except Exception as exc:  # noqa: BLE001 - each client has its own errors
                    return _error("retag", f"cannot reach Kafka to publish result events: {exc}")
            now = datetime.now(UTC)
            store.set_mapping(
                ActiveMapping(
                    args.function, None, thresholds, mapping_version(None, thresholds), now
                )
            )
            if opts.taxonomy and taxonomy is not None:
                store.set_mapping(_taxonomy_row(taxonomy, now))
        try:
            report = retag(
                store,
                args.function,
                thresholds=thresholds,
                taxonomy=taxonomy,
                tenant=opts.tenant,
                producer=producer,
                results_topic=opts.results_topic,
                batch_size=opts.batch_size,
                dry_run=opts.dry_run,
                progress=opts.progress and sys.stderr.isatty(),
            )
        except (TransientError, GaveUp, RecordRejected) as exc:
            print(
                f"tagfleet retag: error: {exc}; the page it was on was not written (its events"
                " may have gone out; the pages before it are done): run the same command again"
                " to finish",
                file=sys.stderr,
            )
            return 1
    finally:
        if producer is not None:
            producer.close()
        store.close()
    print(("(dry run) " if opts.dry_run else "") + report.summary())
    if report.scanned == 0:
        return _error("retag", f"no stored results of {args.function!r} to redraw")
    return 0


def _producer(kafka: KafkaSettings) -> Any:
    """The result producer of the service's Kafka client (``kafka_client``)."""
    if kafka.kafka_client == "confluent":
        from consumers.confluent_sinks import ConfluentProducer

        return ConfluentProducer(kafka.kafka_common())
    from consumers.sinks import Producer

    return Producer(kafka.kafka_common())


def _taxonomy_row(taxonomy: Any, now: datetime) -> Any:
    from consumers.retag.taxonomy import mapping_version
    from consumers.store.tagsets import TAXONOMY_SCOPE, ActiveMapping

    return ActiveMapping(
        TAXONOMY_SCOPE,
        taxonomy.model_dump(mode="json"),
        {},
        mapping_version(taxonomy, {}),
        now,
    )


def _run_set(args: argparse.Namespace, options: Options) -> int:
    from consumers.retag.taxonomy import MappingFileError, load_taxonomy

    try:
        taxonomy = load_taxonomy(Path(args.file))
    except MappingFileError as exc:
        return _error("taxonomy set", str(exc))
    store = _open_store("taxonomy set", options)
    if store is None:
        return 2
    try:
        row = _taxonomy_row(taxonomy, datetime.now(UTC))
        store.set_mapping(row)
    finally:
        store.close()
    print(
        f"active taxonomy {row.version}: new results go through it;"
        " `tagfleet retag FUNCTION` redraws the stored ones"
    )
    return 0


def _run_show(args: argparse.Namespace, options: Options) -> int:
    store = _open_store("taxonomy show", options)
    if store is None:
        return 2
    try:
        rows = store.active_mappings()
    finally:
        store.close()
    doc = {
        name: {
            "version": m.version,
            "set_at": m.set_at.isoformat(),
            **({"taxonomy": m.taxonomy} if m.taxonomy is not None else {}),
            **({"thresholds": m.thresholds} if m.thresholds else {}),
        }
        for name, m in sorted(rows.items())
    }
    print(json.dumps(doc, indent=2))
    return 0


def _run_clear(args: argparse.Namespace, options: Options) -> int:
    from consumers.store.tagsets import TAXONOMY_SCOPE

    store = _open_store("taxonomy clear", options)
    if store is None:
        return 2
    try:
        had = store.clear_mapping(TAXONOMY_SCOPE)
    finally:
        store.close()
    print("active taxonomy cleared" if had else "no active taxonomy")
    return 0
