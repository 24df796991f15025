"""Usage per virtual cluster, measured across every gateway (docs/governance.md,
"Usage"): traffic by UTC hour (``ledger.py``), what the cluster holds for each
tenant (``inventory.py``), and the figures the admin API answers
(``report.py``)."""
