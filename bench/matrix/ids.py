"""The shape of a cell id (12 hexadecimal digits, as the planner makes them): checked wherever an id
read from a results folder or a command line becomes a folder name. Its own module so the store
(and with it ``bench collect``) need not import the config schema and pydantic."""
import re

CELL_ID = re.compile(r"[0-9a-f]{12}")
