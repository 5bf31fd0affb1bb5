"""Feed commands: what comes in (files, SDTM transfers, Kafka) and what it left (quarantine, status,
history), and the synthetic registry feed."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from safety.cli.wiring import (
    FILE_BATCH_SIZE,
    STORE_ERRORS,
    BootstrapOption,
    Format,
    StoreOption,
    TopicOption,
    catch_up,
    err,
    fail,
    kafka_client,
    open_ledger,
    out_console,
    progress_bar,
    progress_steps,
    read_models,
    stop_flag,
    store_refused,
    transfer_state,
)


class QuarantineFormat(StrEnum):
    json = "json"
    table = "table"
    raw = "raw"


def ingest(
    paths: Annotated[list[str], typer.Argument(help="NDJSON files; - reads standard input")],
    store: StoreOption = None,
    batch_size: Annotated[int, typer.Option(min=1, max=20000, help="messages per transaction")] = FILE_BATCH_SIZE,
    workers: Annotated[
        int, typer.Option(min=-1, max=16, help="parser processes; -1: 1 for inputs over 8 MB, else 0 (a second "
                          "gains nothing on two cores: BENCHMARKS.md)")
    ] = -1,
) -> None:
    """Validate NDJSON messages and append them; bad lines go to the quarantine.

    Prints one JSON line: {"accepted": N, "duplicates": N, "quarantined": N}.
    """
    from events.files import read_ndjson, size_of
    from events.ingest import IngestCounts, Ingestor

    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise fail(f"no such file: {path}")
    ledger = open_ledger(store, create=True)
    ingestor = Ingestor(ledger)
    total = IngestCounts()
    try:
        with progress_bar() as progress:
            for path in paths:
                size = size_of(path)
                parsers = workers if workers >= 0 else (1 if (size or 0) > 8_000_000 else 0)
                task = progress.add_task(f"ingest {Path(path).name}", total=size)

                def tracked(p: str = path, t: Any = task) -> Iterator[Any]:
                    read = 0  # advanced a MiB at a time: once a line would cost a lock and a redraw check
                    for item in read_ndjson(p):
                        read += len(item.raw) + 1
                        if read >= 1 << 20:
                            progress.advance(t, read)
                            read = 0
                        yield item
                    progress.advance(t, read)

                total.add(ingestor.ingest(tracked(), batch_size=batch_size, workers=parsers))
    except STORE_ERRORS as exc:
        typer.echo(json.dumps(ingestor.committed.as_dict()))
        raise fail(store_refused(exc)) from None
    typer.echo(json.dumps(total.as_dict()))


def import_sdtm(
    paths: Annotated[list[str], typer.Argument(help="SDTM datasets (.xpt, .json, .ndjson, gzipped or not) or folders")],
    source: Annotated[str, typer.Option(help="the sponsor or registry the transfer comes from")],
    transfer: Annotated[
        str | None, typer.Option(help="the transfer's label (default: from the files' content, so the same files "
                                      "get the same label)")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan (new, corrected, retracted, unchanged "
                                                            "per domain) and write nothing")] = False,
    allow_mass_retraction: Annotated[
        bool, typer.Option("--allow-mass-retraction", help="apply a transfer that retracts more than 20% of a "
                                                           "domain's current records (refused otherwise)")
    ] = False,
    max_mib: Annotated[int, typer.Option(min=1, help="the most one dataset may decompress to, in MiB")] = 2048,
    store: StoreOption = None,
) -> None:
    """Import an SDTM transfer: each record a message, and each later transfer only its differences.

    Prints as its last line {"transfer": ..., "new": n, "corrected": n, "retracted": n, "unchanged": n,
    "quarantined": n, "kept": n, "domains": {...}, "stored": {...}}. Exit 2 when a file is not a whole
    dataset or the transfer is refused (nothing stored changes); otherwise as ingest.
    """
    import re

    from events.sdtm.importer import ImportInterrupted, TransferRefused, import_transfer
    from events.sdtm.readers import DatasetError, read_transfer

    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", source):
        raise fail(f"--source {source!r}: use 1-64 letters, digits, '.', '_' or '-'")
    if transfer is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", transfer):
        raise fail(f"--transfer {transfer!r}: use 1-40 letters, digits, '.', '_' or '-'")
    try:
        datasets = read_transfer(paths, max_bytes=max_mib * 2**20)
        ledger = open_ledger(store, create=not dry_run)
        with progress_steps() as steps:
            summary = import_transfer(
                ledger, datasets, source, transfer, lambda: transfer_state(ledger, source),
                allow_mass_retraction=allow_mass_retraction, dry_run=dry_run, progress=steps,
                waiting=lambda: err.print("another import into this store is running: waiting for it to finish"))
    except (DatasetError, TransferRefused) as exc:
        err.print(f"refused: {exc}", style="red")
        raise typer.Exit(2) from None
    except ImportInterrupted as exc:
        typer.echo(json.dumps(exc.stored))
        raise fail(store_refused(exc.__cause__ or exc)) from None
    for domain, records in summary.pop("unmapped", {}).items():
        err.print(f"{domain}: {records} records read; this domain is not mapped (docs/sdtm-mapping.md)")
    if not dry_run:
        from projections.transfers import TransfersModel

        catch_up(ledger, TransfersModel())
    typer.echo(json.dumps(summary))


def consume(
    bootstrap: BootstrapOption,
    topic: TopicOption = "pv.events",
    group: Annotated[str | None, typer.Option(help="consumer group, to share partitions between consumers")] = None,
    dlq_topic: Annotated[str | None, typer.Option(help="dead-letter topic (default: TOPIC.dlq)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=20000, help="records per poll and transaction")] = 500,
    batch_mib: Annotated[
        float, typer.Option(min=0.001, help="at most this many MiB of messages per transaction (and in memory "
                            "per batch)")
    ] = 4.0,
    poll_timeout: Annotated[int, typer.Option(min=1, help="poll timeout in milliseconds")] = 200,
    with_projections: Annotated[bool, typer.Option("--project", help="also keep the read models up to date")] = False,
    parsers: Annotated[
        int, typer.Option(min=0, max=16, help="parser processes: a backlog is parsed there while this one stores "
                          "(one is as fast as two on two cores and leaves a core free: BENCHMARKS.md)")
    ] = 1,
    source: Annotated[
        str | None,
        typer.Option(help="the registry this topic belongs to: other sources are quarantined as unauthorised"),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Consume the registry feed from Kafka into the ledger, exactly once; stops cleanly on SIGINT/SIGTERM."""
    import logging

    stopping = stop_flag()  # first: a stop asked for during start-up is honoured too
    from events.kafka import FeedConsumer, UndecodableBatch
    from projections.runner import Projector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ledger = open_ledger(store, create=True)
    after = None
    if with_projections:
        projectors = [Projector(ledger, model) for model in read_models()]

        def after() -> None:
            for p in projectors:
                p.catch_up()

    feed = FeedConsumer(ledger, bootstrap, topic=topic, group=group, dlq_topic=dlq_topic,
                        batch_size=batch_size, batch_bytes=int(batch_mib * (1 << 20)), poll_timeout_ms=poll_timeout,
                        client=kafka_client(),
                        after_batch=after, source=source, parsers=parsers)
    err.print(f"consuming {topic} from {bootstrap} into {ledger.store.display()}")
    try:
        stats = feed.run(stopping)
    except UndecodableBatch as exc:  # noted for status and Feed health; a restart resumes at the offset
        raise fail(str(exc)) from None
    typer.echo(json.dumps({**stats.counts.as_dict(), "dead_letters": stats.dead_letters,
                           "reconnects": stats.reconnects}))


def publish(
    paths: Annotated[list[str], typer.Argument(help="NDJSON files; - reads standard input")],
    bootstrap: BootstrapOption,
    topic: TopicOption = "pv.events",
    compression: Annotated[
        str, typer.Option(help="none, gzip, snappy, lz4 or zstd (lz4 and zstd are the usual production choice)")
    ] = "none",
) -> None:
    """Validate NDJSON messages and publish the valid ones, keyed source/patient_id (acks=all, idempotent)."""
    from events.files import read_ndjson
    from events.kafka import COMPRESSION_TYPES
    from events.publisher import publish as send

    if compression not in COMPRESSION_TYPES:
        raise fail(f"--compression {compression!r}: use one of {', '.join(COMPRESSION_TYPES)}")

    total_sent, invalid = 0, []
    for path in paths:
        if path != "-" and not Path(path).is_file():
            raise fail(f"no such file: {path}")
        result = send(read_ndjson(path), bootstrap, topic, client=kafka_client(), compression=compression)
        total_sent += result.sent
        invalid += result.invalid
    for position, reason in invalid:
        err.print(f"not sent: {position.get('file')}:{position.get('line')}: {reason}")
    typer.echo(json.dumps({"sent": total_sent, "invalid": len(invalid)}))


def quarantine(
    store: StoreOption = None,
    format: Annotated[QuarantineFormat, typer.Option("--format")] = QuarantineFormat.table,
) -> None:
    """List quarantined messages with their reason, source, position and raw bytes.

    ``--format raw`` prints the raw messages one per line, to fix and ingest again.
    """
    ledger = open_ledger(store)
    items = [
        {
            "id": q["id"],
            "received_at": q["received_at"],
            "source": q["source"],
            "message_id": q["message_id"],
            "position": json.loads(q["position"]),
            "reason": q["reason"],
            "raw": bytes(q["raw"]).decode("utf-8", errors="replace"),
            "raw_base64": base64.b64encode(bytes(q["raw"])).decode(),
        }
        for q in ledger.tables.quarantined()
    ]
    if format is QuarantineFormat.json:
        typer.echo(json.dumps(items, indent=2, ensure_ascii=False))
    elif format is QuarantineFormat.raw:
        for item in items:
            sys.stdout.buffer.write(base64.b64decode(item["raw_base64"]) + b"\n")
    else:
        table = Table("id", "source", "position", "reason")
        for item in items:
            table.add_row(str(item["id"]), item["source"] or "", json.dumps(item["position"]), item["reason"])
        out_console().print(table)


def status(
    store: StoreOption = None,
    bootstrap: Annotated[str | None, typer.Option("--bootstrap", help="also ask the broker for lag")] = None,
    topic: TopicOption = "pv.events",
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """Feed status: per-partition offsets and lag, last message time, counts per source, dead letters
    waiting to be sent, and each read model's position (and stop, if it stopped)."""
    from events.kafka import TRACKING_PREFIX, partition_lag

    ledger = open_ledger(store)
    stored = ledger.tables.tracking_positions(TRACKING_PREFIX)
    if bootstrap:
        partitions = partition_lag(bootstrap, topic, stored, client=kafka_client())
    else:
        partitions = [{"tracking": name, "offset": offset} for name, offset in sorted(stored.items())]
    sources = ledger.tables.feed_counts()
    from projections.partitions import status as segment_status
    from projections.runner import read_model_dbs, read_model_states

    answer = {
        "store": ledger.store.display(),
        "ledger_position": ledger.position(),
        "partitions": partitions,
        "last_message_at": max((s["last_message_at"] for s in sources), default=None),
        "sources": sources,
        # quarantined from the topic, committed, not yet on its dead-letter topic (sent at the next start)
        "dead_letters_waiting": len(ledger.tables.undelivered_dead_letters(topic)),
        # each read model's position against the ledger's, and where and why it stopped, if it did
        "read_models": read_model_states(dbs := read_model_dbs(ledger.store, read_models()), ledger.position()),
        # on a partitioned PostgreSQL store: each segment's worker (None: unclaimed) and lag per read model
        "segments": segment_status(next(iter(dbs.values())), list(dbs), ledger.name, ledger.position()),
        # record batches a consumer stopped at because it could not decode them (open: not yet got past)
        "feed_faults": ledger.tables.feed_faults(),
    }
    if format is Format.json:
        typer.echo(json.dumps(answer, indent=2))
        return
    out_console().print_json(json.dumps(answer))


def generate(
    patients: Annotated[int, typer.Option(min=1, help="number of patients")] = 1000,
    years: Annotated[float, typer.Option(min=0.1, max=20, help="years of follow-up")] = 3.0,
    seed: Annotated[int, typer.Option(help="random seed: same seed, same bytes")] = 1,
    sources: Annotated[int, typer.Option(min=1, max=100, help="number of registries")] = 1,
    truth: Annotated[Path | None, typer.Option(help="write the known MAS trajectories here (JSON)")] = None,
) -> None:
    """Write a deterministic synthetic registry feed (contract v1, NDJSON) to standard output."""
    from events.generator import Truth
    from events.generator import generate as lines

    known = Truth()
    out = sys.stdout
    for line in lines(patients, years, seed, sources, truth=known):
        out.write(line + "\n")
    out.flush()
    if truth is not None:
        truth.write_text(json.dumps({"mas": known.mas}, indent=1))
    err.print(f"{patients} patients over {years:g} years; {len(known.mas)} evolving-MAS trajectories")


def history(
    source: Annotated[str, typer.Option(help="the registry that sent the patient's messages")],
    patient: Annotated[str, typer.Option(help="the source's patient_id")],
    store: StoreOption = None,
    format: Annotated[Format, typer.Option("--format")] = Format.table,
) -> None:
    """A patient's messages in clinical-time order, with recording time and amendments."""
    from events.history import patient_history

    rows = patient_history(open_ledger(store), source, patient)
    if not rows:
        raise fail(f"no messages for patient {patient} of source {source}")
    if format is Format.json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table("occurred_at", "type", "message_id", "recorded_at", "retracted", "corrected", "transfer")
    for r in rows:
        table.add_row(
            r["occurred_at"], r["type"], r["message_id"], r["recorded_at"],
            "yes" if r["retracted"] else "", "yes" if r["corrected"] else "",
            (r["data"].get("origin") or {}).get("transfer", ""),
        )
    out_console().print(table)
