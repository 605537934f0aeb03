"""A task module that fails to import, as a typo in a deploy would."""

raise RuntimeError("this task module is broken on purpose")
