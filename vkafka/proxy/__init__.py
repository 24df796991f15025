"""Listeners, the client/broker splice, and what the gateway knows of the cluster."""
