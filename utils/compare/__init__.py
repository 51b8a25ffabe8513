"""The strategy comparison: train several losses over seeds, then tabulate them with statistics.

``driver`` runs, resumes and plans the trainings (``auto``: the rounds of ``--seeds auto``; ``state``:
compare.json); ``runs`` reads finished run folders; ``pack`` fits
several runs per device; ``stats`` holds every statistic a verdict rests on (read it alone);
``report`` writes runs.csv, results.csv / results.md and the plots.
"""
