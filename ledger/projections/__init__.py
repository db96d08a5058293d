"""Read models built from the event log, each row set written with its tracking position.

``projector`` applies notifications to in-memory aggregates and writes each touched participant's
rows (``rows``) to the view tables (``store``); ``follower`` does it in each process right after its
saves; ``runner`` is ``ledger projections run``, built on eventsourcing's ProjectionRunner.
"""
