"""The one delivery mechanism every outside system plugs into (DESIGN.md, X-6).

- `models`: WorkItem (one thing to deliver, written in the same transaction as its cause),
  JournalEntry (append-only history of items and subjects), ServiceRun (one run of a job).
- `delivery`: the Channel interface a system implements (deliver, check, on_outcome), claiming
  due items under a lease, retries with back-off, unknown outcomes resolved by asking first.
- `runs`: records each job run as a service run with its packet counts.
"""
