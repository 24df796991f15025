"""Tenant mode: what the gateway needs to put a connection in a virtual cluster."""

from twisted.logger import Logger

from .vclusters import VirtualClusters

log = Logger()


class Tenancy:
    """The token authority and the known virtual clusters."""

    def __init__(self, authority, vclusters=None):
        self.authority = authority
        self.vclusters = vclusters or VirtualClusters()
        # sasl.authenticate asks this before a valid token logs in
        authority.admission = self.unavailable

    def namespace(self, vcluster):
        return self.vclusters.namespace(vcluster)

    def unavailable(self, vcluster):
        """Why a login to *vcluster* is refused though its token is valid, or
        None.  The reason names no other virtual cluster; the log does."""
        reason = self.vclusters.unavailable(vcluster)
        if reason is not None:
            log.warn("refused a login to virtual cluster {vc}: its prefix overlaps "
                     "virtual cluster(s) {others}", vc=vcluster,
                     others=", ".join(self.vclusters.conflicts(vcluster)))
        return reason
