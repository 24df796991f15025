"""The sequencer: responses leave in request order, whoever made them."""

from twisted.trial import unittest

from vkafka.proxy.sequencer import Pending, Sequencer


class SequencerTests(unittest.TestCase):
    def setUp(self):
        self.sent = []
        self.closed = 0
        self.seq = Sequencer(self.sent.append, self.close)

    def close(self):
        self.closed += 1

    def request(self, cid, api_key=3):
        return Pending(cid, api_key, 0, None)

    def test_broker_responses_in_order(self):
        a, b = self.request(1), self.request(2)
        self.seq.forwarded(a)
        self.seq.forwarded(b)
        self.assertIs(self.seq.awaiting_broker(), a)
        self.seq.ready(a, b"A")
        self.assertIs(self.seq.awaiting_broker(), b)
        self.seq.ready(b, b"B")
        self.assertEqual((self.sent, len(self.seq)), ([b"A", b"B"], 0))

    def test_local_answer_waits_for_the_broker_ahead(self):
        """A gateway-made answer to a later request waits for an earlier one."""
        a, b = self.request(1), self.request(2)
        self.seq.forwarded(a)
        self.seq.answered(b, b"B")
        self.assertEqual(self.sent, [])
        self.assertIs(self.seq.awaiting_broker(), a)
        self.seq.ready(a, b"A")
        self.assertEqual(self.sent, [b"A", b"B"])

    def test_async_rewrite_holds_later_responses(self):
        """A response being rewritten asynchronously keeps its place: the next
        broker response is for the request after it and is sent after it."""
        a, b = self.request(1), self.request(2)
        self.seq.forwarded(a)
        self.seq.forwarded(b)
        a.waiting = True
        self.assertIs(self.seq.awaiting_broker(), b)
        self.seq.ready(b, b"B")
        self.assertEqual(self.sent, [])
        self.seq.ready(a, b"A")
        self.assertEqual(self.sent, [b"A", b"B"])

    def test_nobody_asked(self):
        self.assertIsNone(self.seq.awaiting_broker())
        self.seq.answered(self.request(1), b"A")
        self.assertIsNone(self.seq.awaiting_broker())

    def test_close_after_stops_there(self):
        """A failed login's answer is the last thing sent."""
        a, b = self.request(1), self.request(2)
        a.close_after = True
        self.seq.forwarded(b)  # not yet answered: irrelevant once closed
        self.seq.pending.appendleft(a)
        a.local = b"bye"
        self.seq.release()
        self.assertEqual((self.sent, self.closed), ([b"bye"], 1))

    def test_streamable_only_a_broker_fetch_at_the_head(self):
        cases = [  # (api key, made by the gateway, being rewritten, streamable)
            (1, False, False, True),
            (3, False, False, False),
            (1, True, False, False),
            (1, False, True, False),
        ]
        for api_key, local, waiting, expected in cases:
            seq = Sequencer(self.sent.append, self.close)
            head = self.request(1, api_key)
            head.local = b"x" if local else None
            head.waiting = waiting
            seq.pending.append(head)
            self.assertEqual(seq.streamable() is head, expected,
                             (api_key, local, waiting))
        self.assertIsNone(Sequencer(self.sent.append, self.close).streamable())

    def test_streamed_releases_what_follows(self):
        a, b = self.request(1, 1), self.request(2)
        self.seq.forwarded(a)
        self.seq.answered(b, b"B")
        self.assertIs(self.seq.streamable(), a)
        self.seq.streamed()
        self.assertEqual((self.sent, len(self.seq)), ([b"B"], 0))

    def test_sent_in_turn(self):
        """The lane wrote the first answers itself: they leave, and what the
        gateway made behind them goes out after them, in order; room is told
        once fewer than MAX_IN_FLIGHT are owed."""
        from vkafka.proxy.sequencer import MAX_IN_FLIGHT
        rooms = []
        seq = Sequencer(self.sent.append, self.close)
        for cid in range(MAX_IN_FLIGHT - 1):
            seq.forwarded(self.request(cid))
        seq.answered(self.request(500), b"made")
        seq.forwarded(self.request(501))
        seq.room = lambda: rooms.append(len(seq))
        seq.sent_in_turn(MAX_IN_FLIGHT - 2)
        self.assertEqual((self.sent, rooms), ([], [3]))
        seq.sent_in_turn(1)
        self.assertEqual([p.correlation_id for p in seq.pending], [501])
        self.assertEqual((self.sent, rooms), ([b"made"], [3]))

    def test_owed_by_lane(self):
        """The requests the lane may answer from one read: from the head, in
        turn, of the head's namespace, none made by the gateway or being
        rewritten, at most as many as asked."""
        ours, theirs = object(), object()

        def owed(*requests, most=10):
            seq = Sequencer(self.sent.append, self.close)
            for request in requests:
                seq.pending.append(request)
            return [p.correlation_id for p in seq.owed_by_lane(most)]

        def lane(cid, namespace=ours, **fields):
            request = Pending(cid, 0, 9, None, lane=namespace)
            for name, value in fields.items():
                setattr(request, name, value)
            return request
        self.assertEqual(owed(), [])
        self.assertEqual(owed(self.request(1), lane(2)), [])  # the head not by the lane
        self.assertEqual(owed(lane(1), lane(2), lane(3)), [1, 2, 3])
        self.assertEqual(owed(lane(1), lane(2), lane(3), most=2), [1, 2])
        self.assertEqual(owed(lane(1), lane(2, theirs), lane(3)), [1])
        self.assertEqual(owed(lane(1), lane(2, local=b"made"), lane(3)), [1])
        self.assertEqual(owed(lane(1), lane(2, waiting=True), lane(3)), [1])
        self.assertEqual(owed(lane(1, waiting=True), lane(2)), [])
        self.assertEqual(owed(lane(1), self.request(2), lane(3)), [1])
