"""Line helpers that every probe parser shares."""

from __future__ import annotations


def nonblank_lines(text: str | None) -> list[str]:
    """The lines of a section that hold more than whitespace (none for a missing section)."""
    return [ln for ln in (text or "").splitlines() if ln.strip()]


def first_int(text: str | None) -> int | None:
    """The first word of a section as an integer, or None."""
    try:
        return int((text or "").strip().split()[0])
    except (ValueError, IndexError):
        return None


def parse_kv(text: str | None) -> dict[str, str]:
    """KEY=value lines -> {KEY: value}; lines without '=' are skipped."""
    out = {}
    for line in nonblank_lines(text):
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out
