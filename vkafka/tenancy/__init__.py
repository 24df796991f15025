"""Per-API rewrite rules (the one table) and, later, the tenant naming rule."""
