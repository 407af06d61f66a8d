"""The two errors a study can raise before any compute: a mistake in the study file, and a problem
with what a valid study points at."""

from __future__ import annotations


class StudyConfigError(ValueError):
    """A study file or override is invalid. The message lists every problem at once."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        n = len(problems)
        super().__init__(f"{source}: {n} problem{'s' if n != 1 else ''} {self.where}:\n{lines}")

    where = "in the study config"


class StudyInputError(StudyConfigError):
    """The study is valid, but what it points at is not usable: a corpus that cannot be read, a
    budget its corpus cannot hold, a disk too small, a package missing. Reported like a config error
    (every problem at once, each with the key to change) and before any training, but not called a
    mistake in the study file."""

    where = "with what the study points at"
