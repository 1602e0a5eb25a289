"""Reference implementations: short re-statements of public training recipes, each citing its source.

They are written for these benchmarks from the recipes' published descriptions and settings
(no third-party code is copied), so that the course's code can be measured against the way
a well-known baseline trains the same task, on the same machine, in the same run.
"""
