"""Read models built from the event log, each with its tracking position (the next stage).

Single records are read from their aggregates today (``ledger.views``); lists and the compliance
reports will be served from projections kept here.
"""
