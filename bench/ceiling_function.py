"""The ceiling reference: the most trivial HTTP function, served exactly as the runner is."""

import flask
import functions_framework

BODY = b'{"status": "ok"}'


@functions_framework.http
def ceiling(request: flask.Request):
    request.get_data()  # read the body as the real function does
    return flask.Response(BODY, status=201, mimetype="application/json")
