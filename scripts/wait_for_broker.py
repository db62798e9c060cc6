"""Wait until RabbitMQ accepts an AMQP connection (used by scripts/prepare_tests.sh and tests)."""

import argparse
import os
import sys
import time

import pika

parser = argparse.ArgumentParser()
parser.add_argument("--timeout", type=float, default=60)
parser.add_argument(
    "--url",
    default=os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
)
args = parser.parse_args()
deadline = time.monotonic() + args.timeout
while True:
    try:
        pika.BlockingConnection(pika.URLParameters(args.url)).close()
        print("RabbitMQ is up")
        sys.exit(0)
    except Exception as error:  # any failure means "not yet"
        if time.monotonic() > deadline:
            print(f"RabbitMQ did not answer at {args.url}: {error!r}", file=sys.stderr)
            sys.exit(1)
        time.sleep(1)
