"""Limits that are part of the wire contract.

Producers in any language must respect these; consumers reject anything outside them
and route it to dead-letter with a reason that names the field, the value and the limit.
"""

from __future__ import annotations

import re

#: Largest record value any streamtune consumer will try to decode (bytes).
#: Adapter chunks on ``model-updates`` have their own, larger limit.
MAX_RECORD_BYTES = 256 * 1024

#: Largest record value on ``model-updates`` (an inline adapter or one chunk of one).
MAX_MODEL_UPDATE_BYTES = 4 * 1024 * 1024

#: Longest text accepted for classification, in characters.
MAX_TEXT_CHARS = 4096

#: Ids are short, printable and safe to use as Kafka keys and file names.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
ID_RE = re.compile(ID_PATTERN)

#: Task names are lower-case slugs, such as ``tfns-sentiment``.
TASK_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,63}$"

#: Timestamps are Unix epoch milliseconds. Anything before 2000-01-01 is a unit mistake.
MIN_TS_MS = 946_684_800_000

#: How far in the future a producer's clock may run ahead of ours.
MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000

#: A producer's timestamp drives no clock further than this ahead of the consumer's own
#: (join expiry, alert eviction, the monitor's buckets): later ones are clamped to it.
MAX_AHEAD_MS = 60 * 1000

#: Largest ``Prediction.latency_ms``: a week, Kafka's default retention. An answer to an older
#: record (an outage, a producer's event-time stamp) reports this value instead of failing.
MAX_LATENCY_MS = 7 * 24 * 3600 * 1000

#: Probability vectors, metric maps and similar collections stay small.
MAX_LABELS = 1024
MAX_METRICS = 64
MAX_OFFSET_RANGES = 1024
