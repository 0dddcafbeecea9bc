"""`prfleet eval CORPUS`: review quality measured on a corpus of cases with known issues, through the local stack.

corpus.py loads and checks the cases, matching.py pairs findings with golden issues, scoring.py turns the pairs
into precision / recall / F1 and cost figures, report.py prints them, run.py reviews each case exactly as
`prfleet review` does (prfleet_local.cli.review.review_range).
"""
