"""The admin HTTP API (Klein), served on the gateway's reactor."""
