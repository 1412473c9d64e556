"""Classic attribution maps used for comparison (built on captum and zennit where possible)."""
