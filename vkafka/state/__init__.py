"""Gateway state (virtual clusters, accounts, revocations, mappings) and where it lives."""
