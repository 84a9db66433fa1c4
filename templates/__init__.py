"""The templates gpuk8s renders, installed as the package gpuk8s.templates (see pyproject.toml).

A regular package, so that importlib.resources finds it in editable installs too.
"""
