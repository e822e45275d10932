"""Reproducible performance benchmarks: ``python -m benchmarks`` (``make bench``).

One module per benchmark, each with ``run(quick=False, **sizes) -> list[Row]``:

* :mod:`benchmarks.engine` — engine overhead against a bare append+len loop
  (and the seed's naive design, :mod:`benchmarks.seed_reference`);
* :mod:`benchmarks.end_to_end` — a real pycti helper, the stub OpenCTI API and
  RabbitMQ: batched vs naive per-object vs direct ``send_stix2_bundle``, and
  bundle vs split send mode;
* :mod:`benchmarks.example_offline` — the example connector offline on a
  generated feed, with a profile split;
* :mod:`benchmarks.memory` — peak memory of a long stream;
* :mod:`benchmarks.pipelined` — pipelined vs synchronous sending at 20 ms API
  latency.

Figures are ratios measured in one run, best of a few repetitions; absolute
numbers depend on the machine and its load.
"""
