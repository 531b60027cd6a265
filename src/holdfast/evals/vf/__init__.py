"""Holdfast as a ``verifiers`` environment: a taskset from the generators, Holdfast as the harness.

- ``holdfast.evals.vf.taskset`` (taskset id for ``vf-eval``): the tasks of one suite, built by
  the same seeded generators, with the suite's exact scorer as the reward;
- ``holdfast.evals.vf.harness`` (harness id): the program the model runs in is Holdfast's own
  RLM loop (or the agent loop): verifiers forwards its model endpoint (the interception proxy that
  records the trace, tokens and log-probabilities for prime-rl) and Holdfast drives the model
  through its REPL, sandbox and harness;
- ``holdfast.evals.vf.program``: that program (``python -m holdfast.evals.vf.program``), which
  runs in Holdfast's own environment; it never imports ``verifiers``.

``vf-eval holdfast.evals.vf.taskset --env.agent.harness.id holdfast.evals.vf.harness ...``; see
docs/evals.md. Importing this package does not import ``verifiers``.
"""
