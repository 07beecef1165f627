"""Store access: one facade over Beam's FileSystems (`fs`) and one module per store's own client."""
