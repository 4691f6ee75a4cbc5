"""``python -m node.cli``: what tests, examples and benchmarks start."""

from node.cli import main

main()
