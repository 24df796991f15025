"""Tenant mode: what the gateway needs to put a connection in a virtual cluster."""

from .vclusters import VirtualClusters


class Tenancy:
    """The token authority and the known virtual clusters."""

    def __init__(self, authority, vclusters=None):
        self.authority = authority
        self.vclusters = vclusters or VirtualClusters()

    def namespace(self, vcluster):
        return self.vclusters.namespace(vcluster)
