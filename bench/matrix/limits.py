"""How many cells a plan may expand to before bench refuses it; its own module so the command
line can show the default without importing the planner (and pydantic) for every command."""
DEFAULT_MAX_CELLS = 100_000
