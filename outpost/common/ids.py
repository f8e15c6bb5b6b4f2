"""UUIDs as text, many at a time: random (version 4), and time-ordered (version 7) for
task ids.

``str(uuid.uuid4())`` builds a ``UUID`` object per id (an int, its checks, then the text
from the int): about a tenth of the service's CPU time per task when tasks are submitted
in bulk. These are the same ids (16 bytes from ``os.urandom``, the version and variant
bits set as RFC 4122 says), read from the OS in one call and formatted straight from the
bytes.
"""

from __future__ import annotations

import os
import time


def uuid4_texts(n: int) -> list[str]:
    """``n`` new random UUIDs in their usual text form (``str(uuid.uuid4())``)."""
    raw = bytearray(os.urandom(16 * n))
    out: list[str] = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # the RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


#: A random hex digit -> the variant's digit (binary 10xx: 8, 9, a or b), its low 2 bits
#: kept random.
_VARIANT = {f"{i:x}": "89ab"[i & 3] for i in range(16)}


def uuid7_texts(n: int) -> list[str]:
    """``n`` new time-ordered UUIDs (version 7, RFC 9562) in their usual text form: the
    first 48 bits are the Unix time in milliseconds, the other 74 (all but the version
    and variant bits) random, from one read of the OS's randomness.

    Task ids: the store's index of task ids (a B-tree) then takes a batch of new tasks in
    its last pages instead of one page per task scattered over the whole index. That
    made a bulk submission write ~2.3 times as many bytes of SQLite log per task (every
    page a commit touches is logged whole) and cost ~1.5 times the CPU in SQLite.
    Clients see ordinary UUIDs; ids made within the same millisecond are in no
    particular order among themselves, and a clock set back costs only locality.
    """
    ms = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    head = f"{ms[:8]}-{ms[8:]}-7"  # then 3 random hex digits: 12 bits
    # 20 random hex digits per id (10 bytes), 19 used: 3, then the variant's digit (2
    # random bits under the fixed ones), then 3 + 12 (RFC 4122 / 9562 layout 8-4-4-4-12).
    r = os.urandom(10 * n).hex()
    variant = _VARIANT
    return [
        f"{head}{r[k : k + 3]}-{variant[r[k + 3]]}{r[k + 4 : k + 7]}-{r[k + 7 : k + 19]}"
        for k in range(0, 20 * n, 20)
    ]
