"""A real SMTP server (aiosmtpd) for the email channel's tests.

Listens on 127.0.0.1:PORT, saves every accepted message to DIR as
<n>.eml, and appends one line to DIR/attempts.log per RCPT command, so a
test can count delivery attempts, refused ones included. With
--rcpt-code / --data-code it answers every RCPT / DATA with that reply
instead (e.g. 451 or 550). Prints "ready" on stdout once listening and
runs until killed or until stdin closes.

Usage: python smtp_server.py --port PORT --dir DIR [--rcpt-code CODE] [--data-code CODE]
"""

import argparse
import os
import sys
import threading

from aiosmtpd.controller import Controller

REPLIES = {
    "421": "421 4.3.2 Service not available, closing channel",
    "450": "450 4.2.1 Mailbox busy, try again later",
    "451": "451 4.3.0 Temporary local problem, try again later",
    "452": "452 4.3.1 Insufficient system storage",
    "550": "550 5.1.1 Recipient address rejected: user unknown",
    "551": "551 5.1.6 User not local",
    "552": "552 5.3.4 Message too big",
    "553": "553 5.1.3 Mailbox name not allowed",
    "554": "554 5.7.1 Message refused by policy",
}


def reply(code):
    return REPLIES.get(code, f"{code} Refused by the test server")


class Handler:
    def __init__(self, directory, rcpt_code, data_code):
        self.directory = directory
        self.rcpt_code = rcpt_code
        self.data_code = data_code
        self.lock = threading.Lock()
        # A restarted server keeps numbering after the messages already saved.
        self.count = sum(1 for name in os.listdir(directory) if name.endswith(".eml"))

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with open(os.path.join(self.directory, "attempts.log"), "a") as log:
            log.write(address + "\n")
        if self.rcpt_code:
            return reply(self.rcpt_code)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_code:
            return reply(self.data_code)
        with self.lock:
            self.count += 1
            name = f"{self.count}.eml"
        path = os.path.join(self.directory, name)
        # Written then renamed, so a reader never sees half a message.
        with open(path + ".tmp", "wb") as out:
            out.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        return f"250 2.0.0 Ok: queued as {name}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--rcpt-code")
    parser.add_argument("--data-code")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Handler(args.dir, args.rcpt_code, args.data_code)
    controller = Controller(handler, hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready", flush=True)
    try:
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    controller.stop()


if __name__ == "__main__":
    main()
