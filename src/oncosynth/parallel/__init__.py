"""Running work in parallel: ``executor`` (independent units in this process, a process pool or
Ray tasks) and ``distributed`` (one training data-parallel across torchrun processes, DDP)."""
