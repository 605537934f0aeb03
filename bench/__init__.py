"""The workerpool benchmark: `python -m bench` (see docs/BENCHMARKS.md).

Kept free of imports: workerpool children import `bench.tasks`, and whatever this
package pulls in would count against their idle memory.
"""
