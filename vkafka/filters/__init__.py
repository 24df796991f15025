"""Filters on the data path: each sees one request or response and the narrow services it needs, never the connection."""
