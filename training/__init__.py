"""Offline training of GLUS (installed as ``glus_ros.training``; see the README for why)."""
