"""RoSPr in a run, by responsibility.

- ``prepare``: what the method needs before any unit: the source tasks as tuning jobs, the prompt
  bank (tuning what it lacks), the library (reused when built from exactly the same inputs), the
  retriever; ``rospr tune`` and ``rospr library build`` too.
- ``tune_pool``: prompt tuning's trainers: in process, or a pool of Ray actors.
- ``unit``: one (task, prompt) unit's decision: its retrieval queries and exclusions, the VAR
  candidates, the selection and the soft prompt, and the retrieval log of results.json.

The unit's algorithm (retrieve -> select -> score) runs in one place, the runner's driver
(``harness/runner/driver.py``), which calls ``unit``; a notebook that wants one unit runs the
runner with the in-process executor (``ray.enabled: false``, one task with one prompt).
"""
