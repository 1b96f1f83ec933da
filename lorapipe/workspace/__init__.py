"""The commands around a checkout: make demo's branch, params profiles, git identity, DagsHub login, and the
credential check of what leaves."""
