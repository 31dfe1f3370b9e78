"""A real Segment client pointed at the Nudge agent.

Usage: segment_client.py AGENT_URL WRITE_KEY USER_ID

Sends one track, one identify and one page call with the official
`segment-analytics-python` library in sync mode (each call is a blocking
POST to AGENT_URL/v1/batch; a non-2xx answer raises), then prints the
messageIds the library generated as one JSON object on stdout.
"""

import json
import sys

import segment.analytics as analytics


def main() -> int:
    host, write_key, user_id = sys.argv[1:4]
    analytics.write_key = write_key
    analytics.host = host
    analytics.sync_mode = True
    analytics.max_retries = 0

    _, track = analytics.track(
        user_id, "Order Completed", {"revenue": 42.5, "currency": "EUR"}
    )
    _, identify = analytics.identify(user_id, {"email": "ada@example.com", "plan": "pro"})
    _, page = analytics.page(user_id, "Docs", "Getting Started", {"path": "/docs/start"})
    analytics.flush()

    print(
        json.dumps(
            {
                "track": track["messageId"],
                "identify": identify["messageId"],
                "page": page["messageId"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
