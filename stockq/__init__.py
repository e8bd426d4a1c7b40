"""stockq: the settings every edge reads (settings.py) and the `stockq` command (cli/)."""
