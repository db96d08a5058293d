"""Personal data protection: the master key, per-participant data keys, and the sealing mapper."""
