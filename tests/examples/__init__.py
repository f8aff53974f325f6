"""The examples (examples/): each run in the program it is for, against a real node."""
