"""Tools that bring task data onto a machine, apart from the tasks that read it: ``fetch`` (the pinned
promptsource and BIG-bench sdists from the package registry, checked and unpacked into the data cache)
and ``synth`` (rows synthesised from the catalog's field constraints, for runs and tests without the
real datasets)."""
