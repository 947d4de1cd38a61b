"""promptsieve benchmarks: real prompts, a real target, baselines and a report.

Run ``promptsieve bench --profile quick`` (from a checkout also ``python -m benchmarks.run``;
see :mod:`benchmarks.run`).
"""
