"""The replica core inside the stack's deterministic simulator (see `world`), the replica
properties checked over a run (`check`), and the scenarios that sweep them (`scenario`)."""
