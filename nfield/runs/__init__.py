"""Runs: a run directory's files and rules (new, resume, load), one signal's run, collections of
many signals, views of a finished run (render, eval, mesh, info) and plots of its metrics."""
