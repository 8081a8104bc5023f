"""The parsers of a Reveal's composite fields (its outputs summary, its part of stderr and the
output files it carries for a numeric comparison), kept apart from messages.py so that module stays a list of message types."""

from __future__ import annotations

from typing import Any

from .fields import (
    COMPARE_FILES_MAX, COMPARED_CAP, MANIFEST_PATH_MAX, MANIFEST_MAX_ENTRIES, OUT_MAX_FILES_LIMIT, OUT_NOTE_NAME_MAX, OUT_NOTES_MAX, STDERR_CAP, STDERR_PARTS, _bytes,
    _fail, _int, _list, _str,
)
from .outputs import OUT_STATUSES, SKIP_REASONS, Outputs, is_printable_ascii


def _outputs(body: Any, listed: int) -> Outputs:
    """Reveal.outputs from its body [status, files, notes, skipped]; `listed`: manifest entries."""
    body = _list(body, "outputs", 4)
    if len(body) != 4:
        raise _fail("outputs", "must be [status, files, notes, skipped]")
    status = _str(body[0], "outputs status", 32)
    if status not in OUT_STATUSES:
        raise _fail("outputs status", f"must be one of {OUT_STATUSES}")
    files = _int(body[1], "outputs files", 0, OUT_MAX_FILES_LIMIT + 1)
    notes = []
    for note in _list(body[2], "outputs notes", OUT_NOTES_MAX):
        note = _list(note, "outputs notes[]", 2)
        if len(note) != 2:
            raise _fail("outputs notes[]", "must be [name, reason]")
        name, reason = _str(note[0], "note name", OUT_NOTE_NAME_MAX), _str(note[1], "note reason", 32)
        if not is_printable_ascii(name) or reason not in SKIP_REASONS:
            raise _fail("outputs notes[]", "must be an escaped name and a known reason")
        notes.append((name, reason))
    skipped = _int(body[3], "outputs skipped", len(notes), OUT_MAX_FILES_LIMIT + 1)
    if notes != sorted(notes) or (skipped > len(notes) and len(notes) < OUT_NOTES_MAX):
        raise _fail("outputs notes", "must be sorted, the first OUT_NOTES_MAX of the skipped entries")
    if files < listed or (files > listed and listed < MANIFEST_MAX_ENTRIES):
        raise _fail("outputs files", "must count the manifest's files and any beyond MANIFEST_MAX_ENTRIES")
    if status and (files or notes or skipped):
        raise _fail("outputs", "a result over the output quota lists nothing")
    return Outputs(status, files, tuple(notes), skipped)


def _stderr(data: Any, part: Any) -> tuple[bytes, str]:
    """Reveal.stderr and stderr_part: a part of stderr (only a cut one fills STDERR_CAP)."""
    data = _bytes(data, "stderr", max_len=STDERR_CAP)
    part = _str(part, "stderr_part", 8)
    if part not in STDERR_PARTS:
        raise _fail("stderr_part", f"must be one of {', '.join(STDERR_PARTS)}")
    if part != "all" and len(data) != STDERR_CAP:
        raise _fail("stderr", "a cut stderr keeps STDERR_CAP bytes")
    return data, part


def _compared(body: Any, manifest: list, batch: bool) -> tuple[tuple[str, bytes], ...]:
    """Reveal.compared: [path, bytes] pairs, sorted by path, each a file of the manifest, at most
    COMPARED_CAP bytes in all; none in a batch's reveal. Whether each is the manifest's file (its
    CID) and one the spec names is `compare.carried_problem`'s to say, given the spec."""
    out = []
    for entry in _list(body, "compared", COMPARE_FILES_MAX):
        entry = _list(entry, "compared[]", 2)
        if len(entry) != 2:
            raise _fail("compared[]", "must be [path, bytes]")
        out.append((_str(entry[0], "compared path", MANIFEST_PATH_MAX), _bytes(entry[1], "compared bytes",
                                                                           max_len=COMPARED_CAP)))
    paths = [p for p, _ in out]
    if paths != sorted(set(paths)) or not set(paths) <= {m[0] for m in manifest}:
        raise _fail("compared", "must be files of the manifest, sorted by path without duplicates")
    if sum(len(d) for _, d in out) > COMPARED_CAP or (batch and out):
        raise _fail("compared", f"carries at most {COMPARED_CAP} bytes in all, and nothing in a batch")
    return tuple(out)
