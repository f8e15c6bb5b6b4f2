"""The commented ``config.yaml`` that ``outpost endpoint configure`` writes (text only:
writing it needs neither the config models nor YAML)."""

DEFAULT_CONFIG_YAML = """\
# Outpost endpoint configuration. Unknown keys are errors.
# Docs: README.md, "Endpoint configuration".

# Name shown by `outpost endpoint list` and the service.
display_name: {name}

# Where tasks run.
#   ProcessPoolEngine: worker processes on this machine (a crashing task fails alone).
#   ThreadPoolEngine:  threads in the endpoint process (lowest overhead).
#   HighThroughputEngine: blocks of workers from a batch scheduler (Slurm, PBS Pro...)
#                      through Parsl; see docs/slurm.md.
engine:
  type: ProcessPoolEngine
  # max_workers: 4          # default: number of CPUs

# Only these function ids may run here (also enforced by the service).
# allowed_functions:
#   - 00000000-0000-0000-0000-000000000000

# Seconds between heartbeats, and without one before the endpoint counts as offline.
heartbeat_period: 30
heartbeat_threshold: 120

# Environment variables for workers.
# environment:
#   OMP_NUM_THREADS: "1"

# Shell commands run before the engine starts and after it stops.
# endpoint_setup: module load python
# endpoint_teardown: echo bye

# Most tasks this endpoint holds at once, and the largest result it sends (bytes).
# task_window: 1024
# result_size_limit: 10485760

# Run each task in its own directory (tasks/<task id>/ beside this file).
# task_sandbox: false
"""
