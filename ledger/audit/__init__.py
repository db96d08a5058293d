"""What auditors use to check the record: the event feed now; the Merkle tree over the log,
signed checkpoints and verification in the next stage."""
