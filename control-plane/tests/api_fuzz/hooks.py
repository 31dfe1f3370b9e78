"""Schemathesis hooks for fuzzing the control plane's HTTP API against its
OpenAPI document (`control-plane/tests/api_fuzz.rs`, and by hand: see the
README's "HTTP API reference (OpenAPI)").

Load with `SCHEMATHESIS_HOOKS=control-plane/tests/api_fuzz/hooks.py`.
"""

from datetime import datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

# `format: iana-time-zone` (the preferences' time zones): the document
# cannot list the server's time zone database, so schema-valid values are
# drawn from names every database holds (UTC is built into the server).
# Other strings are the fuzzer's negative cases, which the server refuses.
schemathesis.openapi.format(
    "iana-time-zone",
    st.sampled_from(
        [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "America/Sao_Paulo",
            "Asia/Tokyo",
            "Asia/Kolkata",
            "Australia/Sydney",
        ]
    ),
)

# `format: nudge-snooze-time` (a snooze's `until`): the server takes an
# RFC 3339 time between 1 second and 366 days ahead of its clock, a rule
# relative to "now" that JSON Schema cannot state. Schema-valid values are
# drawn from that window, measured when each is drawn; other strings are
# the fuzzer's negative cases, which the server refuses with a 400.
def _snooze_time(seconds):
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat(
        timespec="seconds"
    )


schemathesis.openapi.format(
    "nudge-snooze-time",
    st.integers(min_value=60, max_value=300 * 86_400).map(_snooze_time),
)


# `format: nudge-schedule-time` (a broadcast's `send_at`): the server takes
# an RFC 3339 time at most 366 days ahead of its clock (a past time means
# at once). Schema-valid values are drawn from a day ago to 300 days
# ahead, measured when each is drawn.
schemathesis.openapi.format(
    "nudge-schedule-time",
    st.integers(min_value=-86_400, max_value=300 * 86_400).map(_snooze_time),
)
