"""The workbook's one exception: a problem stated plainly, with the fix named.

Notebook 00 shows what these messages look like.
"""


class WorkbookError(ValueError):
    """Raised for bad input or an option this machine cannot run.

    ``problem`` says what is wrong, ``fix`` says what to do instead. ``str(err)`` holds both.
    """

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\nFix: {fix}")
