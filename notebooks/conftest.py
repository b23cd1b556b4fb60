"""nbval collection settings for the chapter notebooks.

Notebooks listed in ``collect_ignore`` have not yet been executed end to end in small mode on an
uncontended machine, so CI does not run them yet (they stay runnable by hand and by
``python -m helpers run-all``). Remove a name once its notebook has been executed and committed with outputs.
"""
collect_ignore = [
    "08_llm2llm_classification.ipynb",  # committed unexecuted (chapter 08 issue): verify, then remove
]
