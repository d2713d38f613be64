"""The population run (bench/population.py, docs/postmatch.md "Population run"): simulated
users with Nakama sockets (users), the services under ``mosaic run`` and one tick (run),
and the figures (report)."""
