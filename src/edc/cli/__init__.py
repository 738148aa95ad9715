"""Entry points: the `edc` command, the participant client and the one-machine supervisor."""
