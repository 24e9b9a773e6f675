"""Side-by-side benchmarks of agentmesh and its baselines (run from a source checkout).

Run ``python -m benchmarks --help``. Every scenario runs our system and each of its baselines in
the same invocation, on the same workload, at least three times, and reports medians with
min-max and the ratio of ours to each baseline (> 1 means ours is better).

Adding a scenario group is one module in this package (its name must not start with ``_``); it
is found and imported by ``python -m benchmarks``. In it, declare a scenario and register one
function per system::

    from ._framework import Metric, RunContext, Workload, scenario

    ECHO = scenario(
        "mygroup.echo",
        title="What is measured, in a few words",
        description="The workload and what exactly the clock covers.",
        metrics=(Metric("per_s", "delivered", "msg/s", better="higher"),),
        workload=Workload(quick=1_000, full=20_000),
    )

    @ECHO.system("agentmesh", "agentmesh MeshNode", ours=True)
    async def _echo_mesh(run: RunContext) -> dict[str, float]:
        ...  # build a fresh runtime, do run.n operations, tear it down
        return {"per_s": delivered / seconds}

    @ECHO.system("autogen-st", "AutoGen SingleThreadedAgentRuntime")
    async def _echo_autogen(run: RunContext) -> dict[str, float]: ...

An async system function runs in a fresh event loop per repetition; a plain function (for
example one that drives subprocesses) is called directly and must bound its own waits.

More that a scenario may declare:

- ``target(ECHO, "per_s", "autogen-st", at_least=10.0, text=...)``: a bar from the issue, judged on
  the medians (on the oriented ratio to that baseline, or on our median when the baseline is
  ``None``) and listed as met/missed under "Targets" in the report; a bar, not a test.
- ``scenario(..., solo=True)``: our system alone, no baseline (scale); ``in_quick=False``: skipped
  by ``--quick``; ``plot=False``: no bar plot. ``@group_plot("group")`` draws one plot for a whole
  group from the merged report (the scale group's line plot).

Processes: a scenario that crosses processes starts its children with ``_procs.Children`` (killed
by pid when the ``with`` block ends, whatever happens) running ``python -m benchmarks._child
ROLE CONFIG``; roles live in ``_roles_<system>.py`` and share the drivers of ``_child.py``, and
parent and children synchronise by JSON lines over pipes, never by sleeping.
``AGENTMESH_BENCH_PROFILE=DIR`` samples the agentmesh children with py-spy; summarise the files
with ``python -m benchmarks._profile DIR/*.txt``.
"""
