"""Schemathesis hooks for fuzzing the control plane's HTTP API against its
OpenAPI document (`control-plane/tests/api_fuzz.rs`, and by hand: see the
README's "HTTP API reference (OpenAPI)").

Load with `SCHEMATHESIS_HOOKS=control-plane/tests/api_fuzz/hooks.py`.
"""

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
