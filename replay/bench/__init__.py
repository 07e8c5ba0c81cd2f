"""Benchmarks behind ``replay bench``: each compares replay with the alternatives in one run.

Every result carries the machine, date, commit and command (`environment()`), so
figures in docs/benchmarks.md can be traced to how they were made.
"""
