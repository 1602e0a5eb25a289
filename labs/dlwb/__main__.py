"""``python -m dlwb`` is not a command: the course's commands are ``python -m coursekit``."""

import sys

if __name__ == "__main__":
    command = " ".join(sys.argv[1:]) or "--help"
    sys.exit(f"dlwb is the package that notebooks and labs import; the instructor's commands moved to coursekit: "
             f"run `python -m coursekit {command}`")
