"""SAT Studio benchmarks: `python -m bench` (see bench/__main__.py and the README's Benchmarks section).

Benchmarks measure; they never assert. Tests run them only in quick mode, to check that they work
and write complete results files.
"""
