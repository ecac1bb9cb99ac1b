"""Running plays: the executor (forks, serial batches, max-fail), one host's
run (facts, plan, apply, handlers), role loading, results, reboots."""
