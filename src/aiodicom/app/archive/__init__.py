"""What the bundled server keeps: Part 10 files, their head reader, the index, Q/R over it."""
