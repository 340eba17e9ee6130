"""Built-in task plugins, installed as ``gradbench_tasks``; one module per task family."""
