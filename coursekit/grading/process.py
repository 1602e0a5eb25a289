"""One grader process: ``python -m coursekit.grading.process SPEC`` grades one submission.

The batch (:func:`coursekit.grading.grade.grade_lab`) starts one per submission, so that a grader that
fails or is killed costs only its student; SPEC is the JSON file naming the master, the submission,
the limits and where the result goes (:func:`coursekit.grading.grade.main`).
"""

import sys

from coursekit.startup import skip_unused_format_grammars

if __name__ == "__main__":
    skip_unused_format_grammars()  # before grade imports nbformat: a second less per submission
    from coursekit.grading.grade import main

    main(sys.argv[1])
