"""A raw Kafka protocol client for tests: sends exactly what a test builds.

No client library filters or retries anything, so tests can send what a
hostile client would.
"""

import socket
import threading

from vkafka.protocol.codec import decode_response, encode_request
from vkafka.protocol.framing import FrameDecoder, frame


class RawClient:
    def __init__(self, host, port, timeout=15, tls=None, server_hostname=None):
        """*tls*: an ``ssl.SSLContext`` to wrap the connection in (SNI: the
        *server_hostname*, which need not resolve)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock,
                                        server_hostname=server_hostname or host)
        self.decoder = FrameDecoder()
        self.frames = []
        self.correlation_id = 0

    def send(self, body, version):
        """Send one request; return its correlation id."""
        self.correlation_id += 1
        self.sock.sendall(frame(encode_request(body, version, self.correlation_id,
                                               "raw-test")))
        return self.correlation_id

    def send_bytes(self, payload):
        self.sock.sendall(frame(payload))

    def receive_frame(self):
        """The next response frame, or None if the gateway closed the connection."""
        while not self.frames:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def request(self, body, version):
        """Send a request and decode its response (None if the connection closed)."""
        self.send(body, version)
        payload = self.receive_frame()
        if payload is None:
            return None
        _, response = decode_response(payload, body.__api_key__, version)
        return response

    def pipelined(self, body, version, count):
        """Send *body* *count* times without waiting for the answers, which a
        thread reads meanwhile (a gateway that holds this connection's reads
        must not find its answers stuck behind ours); the decoded answers, in
        order.  What the gateway charges per request then does not depend on
        how fast this client decodes (a sequential client paid back its
        tenant's loop share between requests on a slow machine)."""
        frames, failed = [], []

        def receive():
            try:
                for _ in range(count):
                    frames.append(self.receive_frame())
            except Exception as e:  # noqa: BLE001 - reported below
                failed.append(e)
        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        for _ in range(count):
            self.send(body, version)
        reader.join(self.sock.gettimeout() * count)
        if failed or reader.is_alive() or None in frames:
            raise AssertionError(f"{len(frames)} of {count} answers: {failed or 'closed'}")
        return [decode_response(payload, body.__api_key__, version)[1]
                for payload in frames]

    def closed(self):
        """True once the gateway has closed the connection."""
        return self.receive_frame() is None

    def sasl_plain(self, username, password):
        """SaslHandshake v1 + SaslAuthenticate v2; return the authenticate response."""
        from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
        from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest

        handshake = self.request(SaslHandshakeRequest(mechanism="PLAIN"), 1)
        assert handshake.error_code == 0, handshake
        token = b"\x00" + username.encode() + b"\x00" + password.encode()
        return self.request(SaslAuthenticateRequest(auth_bytes=token), 2)

    def close(self):
        self.sock.close()
