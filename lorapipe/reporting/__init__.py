"""Reports on finished runs (PR report, results page, summary, model card, Hub publishing).

No stage imports this package, so editing it never re-runs anything in dvc.lock.
"""
