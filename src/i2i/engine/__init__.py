"""The training engine: the one loop, the checkpointed state and the schedules."""
