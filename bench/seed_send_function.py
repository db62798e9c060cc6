"""The seed's approach, as a reference: store, then publish over a NEW RabbitMQ connection.

Validation and storage are the service's own; only the publish differs: the seed opened a
`pika.BlockingConnection` for every request, declared the queue, published and closed.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import functions_framework  # noqa: E402
import pika  # noqa: E402

from common.http import json_response, read_json  # noqa: E402
from common.model import QUEUED, validate_request  # noqa: E402
from common.queue.base import encode_message  # noqa: E402
from common.runtime import get_service  # noqa: E402


@functions_framework.http
def seed_send(request):
    service = get_service()
    if request.method != "POST":
        return json_response({"status": "ready"})

    notification = validate_request(read_json(request), service.settings.max_retries)
    service.store.add(notification)
    connection = pika.BlockingConnection(pika.URLParameters(service.settings.rabbitmq_url))
    try:
        channel = connection.channel()
        channel.queue_declare(service.settings.queue_name, durable=True)
        channel.basic_publish(
            "",
            service.settings.queue_name,
            encode_message(notification.id),
            properties=pika.BasicProperties(delivery_mode=2),
        )
    finally:
        connection.close()
    service.store.mark_queued([notification.id], service.clock())
    body = {"id": notification.id, "status": QUEUED, "notification": notification.to_dict()}
    return json_response(body, 201)
