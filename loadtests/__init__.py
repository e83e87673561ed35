"""Load tests and on-demand benchmarks (run by hand, never as timed tests)."""
