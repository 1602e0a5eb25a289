"""The grading sandbox's own code: the worker that runs a submission, and the wire format.

This folder (and the package's ``__init__``) is all of ``coursekit`` that the sandbox binds;
the grader, its tests and the master notebooks stay outside it.
"""
