"""`flask portal import FILE.jsonl` (being written)."""
