"""nbval collection settings for the chapter notebooks.

Notebooks listed in ``collect_ignore`` are not run by CI (they stay runnable by hand and by
``python -m helpers run-all``). Every chapter notebook is executed in small mode and committed with outputs,
so the list is empty; add a name only while a notebook is being rewritten.
"""
collect_ignore: list[str] = []
