"""What a job left in /out, as every honest executor must report it: one rule, pure.

The sandbox describes each entry it found (raw name bytes, kind, size, and for the regular
files it read the CID `ipfs add --cid-version 1` gives them: `consensus.unixfs.FileBuilder`); `describe_outputs` turns that into the part of the result that is hashed and
signed (`Outputs`), so executors that saw the same /out report the same thing, whatever the names:

- Quota: the job exceeded it iff it left more than `max_files` entries (files, directories,
  links, anything) or regular files of more than `max_bytes` bytes in all (sizes as the files
  say, so sparse files count in full). Then the result is only that (`OUT_QUOTA_EXCEEDED`): no
  files, and the run's exit code and stdout are not part of it (a job that hits the size-limited
  filesystem's end may print or exit differently from one executor to the next).
- Names: a regular file is listed in the manifest iff its name (the path under /out) is valid
  UTF-8, at most MANIFEST_PATH_MAX bytes, and has no control characters (C0, DEL, C1) in any
  component (`name_problem`). Any other file is skipped as `bad_output_name`.
- Skipped: symlinks, FIFOs, sockets, devices and files with bad names are not outputs; the first
  OUT_NOTES_MAX of them (by escaped name) are named in the result with the reason, and all are
  counted, so nothing is dropped without saying so. Directories are neither listed nor noted.
- Manifest: the first MANIFEST_MAX_ENTRIES listed files by path; `files` counts them all, so a
  cut manifest is visible (`manifest_truncated`).

`escape_name` makes any name printable ASCII, losslessly for what a terminal could be fooled by:
backslash, control characters and bytes that are not UTF-8 become escapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from .fields import MANIFEST_MAX_ENTRIES, MANIFEST_PATH_MAX, OUT_NOTE_NAME_MAX, OUT_NOTES_MAX

OUT_QUOTA_EXCEEDED = "out_quota_exceeded"
OUT_STATUSES = ("", OUT_QUOTA_EXCEEDED)
BAD_OUTPUT_NAME = "bad_output_name"
SKIP_REASONS = ("symlink", "fifo", "socket", "device", "other", BAD_OUTPUT_NAME)
ENTRY_KINDS = ("file", "dir", *SKIP_REASONS[:-1])

ManifestEntry = tuple[str, int, bytes]  # (path, size, binary CIDv1 of the file's UnixFS DAG)
Note = tuple[str, str]  # (escaped name, reason)


@dataclass(frozen=True)
class Outputs:
    """The outputs part of a result: what is hashed besides the manifest.

    status: "" or OUT_QUOTA_EXCEEDED; files: regular files with good names (the manifest holds
    the first MANIFEST_MAX_ENTRIES); notes: the first OUT_NOTES_MAX skipped entries as (escaped
    name, reason), sorted; skipped: how many entries were skipped in all."""

    status: str = ""
    files: int = 0
    notes: tuple[Note, ...] = ()
    skipped: int = 0

    def to_body(self) -> list:
        return [self.status, self.files, [list(n) for n in self.notes], self.skipped]


NONE = Outputs()


def is_control(ch: str) -> bool:
    """C0 controls, DEL and C1 controls: what a terminal may act on."""
    o = ord(ch)
    return o < 0x20 or 0x7F <= o < 0xA0


def name_problem(name: bytes) -> str | None:
    """Why `name` cannot be an output file's path (None: it can)."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8"
    return relative_path_problem(text, MANIFEST_PATH_MAX)


def relative_path_problem(text: str, max_bytes: int) -> str | None:
    """The one rule for a path under /in or /out (None: it is one): at most `max_bytes` bytes of
    UTF-8, relative, no empty, "." or ".." component, no control character."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if not text or len(raw) > max_bytes:
        return f"is empty or longer than {max_bytes} bytes"
    if any(is_control(ch) for ch in text):
        return "has control characters"
    if text.startswith("/") or any(part in ("", ".", "..") for part in text.split("/")):
        return "is not a plain relative path (no leading /, no empty, . or .. part)"
    return None


def escape_name(name: bytes | str, limit: int = OUT_NOTE_NAME_MAX) -> str:
    """`name` as printable ASCII: backslash as \\\\, control characters and other non-ASCII as
    \\xNN (a byte that is not UTF-8) or \\uNNNN; cut to `limit` characters with "..." at the end."""
    text = name.decode("utf-8", "surrogateescape") if isinstance(name, bytes) else name
    out = []
    for ch in text:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif o <= 0xFF:
            out.append(f"\\x{o:02x}" if is_control(ch) else f"\\u{o:04x}")
        else:
            out.append(f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}")
    escaped = "".join(out)
    return escaped if len(escaped) <= limit else escaped[:limit - 3] + "..."


def is_printable_ascii(text: str) -> bool:
    return all(0x20 <= ord(ch) < 0x7F for ch in text)


def describe_outputs(entries: Iterable[tuple[bytes, str, int, bytes | None]], max_bytes: int,
                     max_files: int) -> tuple[tuple[ManifestEntry, ...], Outputs]:
    """The manifest and the outputs summary of what a job left in /out, by the rule above.

    `entries`: (raw name, kind, size, CID or None) per entry, kind one of ENTRY_KINDS. A regular
    file within the quota that has no CID could not be read; it is skipped as "other"."""
    entries = sorted(entries)
    total = sum(size for _, kind, size, _ in entries if kind == "file")
    if len(entries) > max_files or total > max_bytes:
        return (), Outputs(status=OUT_QUOTA_EXCEEDED)
    listed: list[ManifestEntry] = []
    notes: list[Note] = []
    for name, kind, size, digest in entries:
        if kind == "dir":
            continue
        if kind == "file" and digest is not None and name_problem(name) is None:
            listed.append((name.decode("utf-8"), size, digest))
            continue
        reason = BAD_OUTPUT_NAME if kind == "file" and digest is not None else (
            kind if kind in SKIP_REASONS and kind != "file" else "other")
        notes.append((escape_name(name), reason))
    notes.sort()
    return (tuple(listed[:MANIFEST_MAX_ENTRIES]),
            Outputs(files=len(listed), notes=tuple(notes[:OUT_NOTES_MAX]), skipped=len(notes)))


def manifest_truncated(manifest: tuple, outputs: Outputs) -> bool:
    """Whether the manifest lists fewer files than the job left (MANIFEST_MAX_ENTRIES)."""
    return outputs.files > len(manifest)
