"""SASL/PLAIN termination and the tokens that name a client's virtual cluster."""
