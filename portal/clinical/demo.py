"""Demo region: `flask portal demo-data` and `flask portal demo-logins` (being written)."""
