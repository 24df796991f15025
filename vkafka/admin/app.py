# -*- test-case-name: tests.test_admin -*-
"""The admin app.  So far: ``GET /health``, used by ``make up`` and by operators."""

import json

from klein import Klein


class AdminApp:
    app = Klein()

    def __init__(self, refresher, topology):
        self.refresher = refresher
        self.topology = topology

    @app.route("/health", methods=["GET"])
    def health(self, request):
        request.setHeader("Content-Type", "application/json")
        if self.refresher.last_error is None and self.topology.brokers:
            body = {"status": "ready", "brokers": sorted(self.topology.brokers)}
        else:
            request.setResponseCode(503)
            body = {"status": "not ready", "reason": self.refresher.last_error}
        return json.dumps(body)

    def resource(self):
        return self.app.resource()
