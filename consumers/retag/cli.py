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
every asset whose effective tags changed, and only those. With --tenant only that tenant's
assets are redrawn and the mapping becomes its own (other tenants keep theirs); without it,
the default of every tenant is set, and tenants with their own keep it (named on stderr, their
assets redrawn with it). docs/library.md, "Retag and taxonomy".
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
    _add_tenant(put, "make it this tenant's own, over the default")
    add_options(put, [StoreSettings])
    put.set_defaults(handler=_run_set)
    show = sub.add_parser(
        "show",
        help="the active taxonomy and thresholds, as JSON (each row names its tenant: the"
        " tenant's own or '*', the default)",
    )
    _add_tenant(show, "what applies to this tenant's results")
    add_options(show, [StoreSettings])
    show.set_defaults(handler=_run_show)
    clear = sub.add_parser("clear", help="no active taxonomy (functions' thresholds stay)")
    _add_tenant(clear, "drop this tenant's own taxonomy (it gets the default's)")
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
    from consumers.store.tagsets import ALL_TENANTS, TAXONOMY_SCOPE, ActiveMapping

    opts = options[RetagOptions]
    if opts.tenant == ALL_TENANTS:
        return _error("retag", f"--tenant {ALL_TENANTS!r} is the default's; leave --tenant out")
    scope = opts.tenant or ALL_TENANTS
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
    reports = []
    try:
        active = store.active_mappings()

        def effective(function: str, tenant: str) -> ActiveMapping | None:
            return active.get((function, tenant)) or active.get((function, ALL_TENANTS))

        thresholds: dict[str, float] = {}
        current = effective(args.function, scope)
        if not opts.replace_thresholds and current is not None:
            thresholds.update(current.thresholds)
        thresholds.update(from_file)
        calibrated: dict[str, float] = {}
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
            calibrated = found.thresholds
            thresholds.update(calibrated)
        thresholds.update(from_flags)
        new_thresholds = bool(from_file or calibrated or from_flags or opts.replace_thresholds)
        if taxonomy is None:
            stored = effective(TAXONOMY_SCOPE, scope)
            if stored is not None and stored.taxonomy is not None:
                taxonomy = parse_taxonomy(stored.taxonomy, "the active taxonomy")
        # the passes: the tenant's; or the default's, then each tenant with a row of its
        # own (which stays: it is redrawn with its own rows over the new default's)
        passes: list[tuple[str | None, dict[str, float], Any, frozenset[str]]] = []
        if opts.tenant is not None:
            passes.append((opts.tenant, thresholds, taxonomy, frozenset()))
        else:
            own = sorted(
                {t for f, t in active if t != ALL_TENANTS and f in (args.function, TAXONOMY_SCOPE)}
            )
            passes.append((None, thresholds, taxonomy, frozenset(own)))
            for tenant in own:
                mine = active.get((args.function, tenant))
                tax = active.get((TAXONOMY_SCOPE, tenant))
                kept = [n for n, row in (("thresholds", mine), ("taxonomy", tax)) if row]
                print(
                    f"tagfleet retag: tenant {tenant!r} keeps its own {' and '.join(kept)}"
                    f" (`tagfleet retag {args.function} --tenant {tenant}` or `tagfleet"
                    f" taxonomy clear --tenant {tenant}` change it); its results are redrawn"
                    " with them",
                    file=sys.stderr,
                )
                tenant_taxonomy = taxonomy
                if tax is not None:
                    tenant_taxonomy = (
                        None
                        if tax.taxonomy is None
                        else parse_taxonomy(tax.taxonomy, f"the taxonomy of tenant {tenant!r}")
                    )
                tenant_thresholds = thresholds if mine is None else dict(mine.thresholds)
                passes.append((tenant, tenant_thresholds, tenant_taxonomy, frozenset()))
        if not opts.dry_run:
            if opts.results_topic:  # before anything is activated
                try:
                    producer = _producer(options[KafkaSettings])
                except Exception as exc:  # noqa: BLE001 - each client has its own errors
                    return _error("retag", f"cannot reach Kafka to publish result events: {exc}")
            now = datetime.now(UTC)
            if opts.tenant is None or new_thresholds:
                version = mapping_version(None, thresholds)
                store.set_mapping(
                    ActiveMapping(args.function, None, thresholds, version, now, scope)
                )
            if opts.taxonomy and taxonomy is not None:
                store.set_mapping(_taxonomy_row(taxonomy, now, scope))
        try:
            for tenant, limits, tax_, skip in passes:
                reports.append(
                    retag(
                        store,
                        args.function,
                        thresholds=limits,
                        taxonomy=tax_,
                        tenant=tenant,
                        skip_tenants=skip,
                        producer=producer,
                        results_topic=opts.results_topic,
                        batch_size=opts.batch_size,
                        dry_run=opts.dry_run,
                        progress=opts.progress and sys.stderr.isatty(),
                    )
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
    for (tenant, *_), report in zip(passes, reports, strict=True):
        whose = "" if len(passes) == 1 or tenant is None else f"tenant {tenant}: "
        print(("(dry run) " if opts.dry_run else "") + whose + report.summary())
    if sum(r.scanned for r in reports) == 0:
        return _error("retag", f"no stored results of {args.function!r} to redraw")
    return 0


def _producer(kafka: KafkaSettings) -> Any:
    """The result producer of the service's Kafka client (``kafka_client``)."""
    if kafka.kafka_client == "confluent":
        from consumers.confluent_sinks import ConfluentProducer

        return ConfluentProducer(kafka.kafka_common())
    from consumers.sinks import Producer

    return Producer(kafka.kafka_common())


def _taxonomy_row(taxonomy: Any, now: datetime, tenant: str) -> Any:
    from consumers.retag.taxonomy import mapping_version
    from consumers.store.tagsets import TAXONOMY_SCOPE, ActiveMapping

    return ActiveMapping(
        TAXONOMY_SCOPE,
        taxonomy.model_dump(mode="json"),
        {},
        mapping_version(taxonomy, {}),
        now,
        tenant,
    )


def _add_tenant(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--tenant",
        default=None,
        metavar="TENANT",
        help=f"{what} (unset: the default, of every tenant without its own)",
    )


def _scope(command: str, tenant: str | None) -> str | None:
    """The tag_mappings tenant of ``--tenant`` (None, the error printed: ``*``)."""
    from consumers.store.tagsets import ALL_TENANTS

    if tenant == ALL_TENANTS:
        _error(command, f"--tenant {ALL_TENANTS!r} is the default's; leave --tenant out")
        return None
    return tenant or ALL_TENANTS


def _scoped_store(command: str, tenant: str | None, options: Options) -> tuple[str, Any] | None:
    """The ``--tenant`` scope and the open store; None (the reason printed) when either fails."""
    scope = _scope(command, tenant)
    if scope is None:
        return None
    store = _open_store(command, options)
    return None if store is None else (scope, store)


def _run_set(args: argparse.Namespace, options: Options) -> int:
    from consumers.retag.taxonomy import MappingFileError, load_taxonomy

    try:
        taxonomy = load_taxonomy(Path(args.file))
    except MappingFileError as exc:
        return _error("taxonomy set", str(exc))
    opened = _scoped_store("taxonomy set", args.tenant, options)
    if opened is None:
        return 2
    scope, store = opened
    try:
        row = _taxonomy_row(taxonomy, datetime.now(UTC), scope)
        store.set_mapping(row)
        own = sorted({t for f, t in store.active_mappings() if f == row.function} - {scope, "*"})
    finally:
        store.close()
    if args.tenant:
        print(
            f"active taxonomy {row.version} of tenant {args.tenant}: its new results go through"
            f" it; `tagfleet retag FUNCTION --tenant {args.tenant}` redraws the stored ones"
        )
    else:
        print(
            f"active taxonomy {row.version}: new results go through it;"
            " `tagfleet retag FUNCTION` redraws the stored ones"
        )
        if own:
            print(
                "tagfleet taxonomy set: these tenants keep their own taxonomy: " + ", ".join(own),
                file=sys.stderr,
            )
    return 0


def _run_show(args: argparse.Namespace, options: Options) -> int:
    opened = _scoped_store("taxonomy show", args.tenant, options)
    if opened is None:
        return 2
    scope, store = opened
    try:
        rows = store.active_mappings()
    finally:
        store.close()
    # what applies to the tenant: its own rows, the default's where it has none
    chosen = {f: m for (f, t), m in rows.items() if t == "*"}
    chosen.update({f: m for (f, t), m in rows.items() if t == scope})
    doc = {
        name: {
            "version": m.version,
            "set_at": m.set_at.isoformat(),
            "tenant": m.tenant,
            **({"taxonomy": m.taxonomy} if m.taxonomy is not None else {}),
            **({"thresholds": m.thresholds} if m.thresholds else {}),
        }
        for name, m in sorted(chosen.items())
    }
    print(json.dumps(doc, indent=2))
    return 0


def _run_clear(args: argparse.Namespace, options: Options) -> int:
    from consumers.store.tagsets import TAXONOMY_SCOPE

    opened = _scoped_store("taxonomy clear", args.tenant, options)
    if opened is None:
        return 2
    scope, store = opened
    try:
        had = store.clear_mapping(TAXONOMY_SCOPE, scope)
    finally:
        store.close()
    whose = f"tenant {args.tenant}'s own taxonomy" if args.tenant else "active taxonomy"
    then = " (it gets the default's)" if args.tenant else ""
    print(f"{whose} cleared{then}" if had else f"no {whose}")
    return 0
