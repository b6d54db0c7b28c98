"""Replay saved SES events (files or directories) through the pipeline.

Accepts JSON, NDJSON, objects written back to back (Firehose's S3 objects), each
possibly gzip-compressed (detected by content, not name), and directories of
such files (read recursively, in name order). Large files are cut into payloads at
record boundaries, so each stays within the parser's limits.

A replay counts its events in the history rollups of their own hours and days.
Messages sent before the retention keep no lasting record (the store holds them
briefly, ``PAST_RETENTION_HOLD_S``), so replaying such a file twice would count
them twice: each file merged whole is remembered by its content digest, for the
history's keep, and skipped when replayed again (unless forced).
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from service.events import ParseResult
from service.pipeline import Pipeline, SourceCounters

CHUNK_BYTES = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
MAX_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class Rejection:
    """Where a rejected record is: its file, and the line it begins on (wherever the
    parser knows where it begins: one record a line, objects back to back, a single
    object) or its number in the file (items of a JSON array)."""

    path: Path
    line: int | None
    record: int
    reason: str

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line else f"{self.path}, record {self.record}"


@dataclass
class ReplayReport:
    files: int = 0
    bytes: int = 0
    events: int = 0
    # Files skipped as already replayed (same content), with their paths.
    skipped: list[Path] = field(default_factory=list)
    counters: SourceCounters = field(default_factory=SourceCounters)
    # The first rejections, located; counters count them all.
    rejections: list[Rejection] = field(default_factory=list)


def input_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


def read(path: Path) -> bytes:
    return decompressed(path.read_bytes())


def decompressed(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == _GZIP_MAGIC else data


def digest_of(raw: bytes) -> str:
    """A file's identity for "already replayed": its bytes, as stored."""
    return hashlib.sha256(raw).hexdigest()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Cut at the last newline (or ``}{`` boundary) before ``size``; never inside a record."""
    start = 0
    while len(data) - start > size:
        end = start + size
        cut = data.rfind(b"\n", start, end)
        if cut <= start:
            cut = data.rfind(b"}{", start, end)
            if cut > start:
                cut += 1
        if cut <= start:
            # One record longer than a chunk: hand it over whole; the parser judges it.
            cut = data.find(b"\n", end)
            if cut < 0:
                break
        yield data[start:cut]
        start = cut
    if data[start:].strip():
        yield data[start:]


async def replay(
    paths: list[Path],
    pipeline: Pipeline,
    *,
    on_progress: Callable[[int], None] = lambda n: None,
    dry_run: bool = False,
    force: bool = False,
) -> ReplayReport:
    """Feed every file through ``pipeline``; files replayed before (same content)
    are skipped unless ``force``."""
    report = ReplayReport()
    keep_s = max(1, pipeline.history_days) * 86_400
    for path in input_files(paths):
        raw = path.read_bytes()
        digest = digest_of(raw)
        if not dry_run and not force and await pipeline.store.replayed(digest):
            report.skipped.append(path)
            on_progress(len(raw))
            continue
        data = decompressed(raw)
        report.files += 1
        line = record = 1
        for payload in chunks(data):
            if dry_run:
                result = pipeline.parse(payload, "replay")
            else:
                result = await pipeline.ingest(payload, "replay")
            report.events += len(result.events)
            _locate(report, path, payload, line, record, result)
            line += payload.count(b"\n")
            record += result.records
            on_progress(len(payload))
        report.bytes += len(data)
        if not dry_run:
            # Only now is every event of the file durable.
            await pipeline.store.mark_replayed(digest, keep_s)
    report.counters = pipeline.counters.get("replay", SourceCounters())
    return report


def _locate(
    report: ReplayReport,
    path: Path,
    payload: bytes,
    first_line: int,
    first_record: int,
    result: ParseResult,
) -> None:
    room = MAX_EXAMPLES - len(report.rejections)
    if room <= 0 or not result.rejected:
        return
    for issue in result.rejected[:room]:
        # The parser says at which byte of the payload the record begins; its line
        # is the newlines before it. Payloads are cut at newlines, so the count
        # carries over from one payload to the next.
        line = None if issue.offset is None else first_line + payload.count(b"\n", 0, issue.offset)
        report.rejections.append(Rejection(path, line, first_record + issue.index, issue.reason))
