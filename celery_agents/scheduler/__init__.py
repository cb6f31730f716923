"""The beat side: Redis-backed dynamic schedules and background-run bookkeeping.

Empty for now: ``run_in_background`` and manifest schedules land here (see the issues).
"""
