"""Benchmarks, run from the repository root as modules: `python -m benchmarks.table3 ...`.

They use the same public functions a user would (`pipeline.runner.run_pipeline`,
`pipeline.reuse.reuse_stages`, `rundir.layout`), never a stage's internals.
"""
