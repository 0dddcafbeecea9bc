"""Pipeline: a PR's path through the functions: webhook intake, the planner, one file job, fan-in, the sweeper, and
the review they post."""
