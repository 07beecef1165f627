"""The lake protocol: the partition commit, locks, export layouts and history, on any store."""
