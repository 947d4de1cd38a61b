"""promptsieve benchmarks: real prompts, a real target, baselines and a report.

Run ``python -m benchmarks.run --profile quick`` (see :mod:`benchmarks.run`).
"""
