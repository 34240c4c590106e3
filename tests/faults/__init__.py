"""The fault and bad-input suite (make faults)."""
